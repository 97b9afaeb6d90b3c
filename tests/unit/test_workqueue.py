"""The operator's coalescing work queue, driven by a fake clock: what a burst of events, a
backoff and a resync each cost in reconcile passes."""

import threading

from selftaught.controller.workqueue import WorkQueue


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_burst_of_events_during_a_pass_costs_one_more_pass_not_one_each():
    passes, inside, release = [], threading.Event(), threading.Event()

    def work(key, fresh):
        passes.append((key, fresh))
        if len(passes) == 1:
            inside.set()
            release.wait(5)
        return None

    queue = WorkQueue(work, clock=Clock())
    first = threading.Thread(target=queue.submit, args=("run",))
    first.start()
    assert inside.wait(5)
    for _ in range(10):  # ten events while the first pass runs
        queue.submit("run")
    queue.submit("run", fresh=True)
    release.set()
    first.join(5)
    assert passes == [("run", False), ("run", True)]  # the second pass re-reads, as one event asked


def test_keys_do_not_wait_for_each_other():
    seen = []
    queue = WorkQueue(lambda key, fresh: seen.append(key), clock=Clock())
    queue.submit("a")
    queue.submit("b")
    assert seen == ["a", "b"]


def test_a_requeue_comes_back_when_its_time_has_come_and_not_before():
    clock, passes = Clock(), []

    def work(key, fresh):
        passes.append(fresh)
        return 30.0 if len(passes) == 1 else None  # e.g. a retry backoff

    queue = WorkQueue(work, clock=clock)
    queue.submit("run")
    clock.now += 29
    assert queue.run_due() == [] and passes == [False]
    clock.now += 1
    assert queue.run_due() == ["run"] and passes == [False, False]
    clock.now += 1000
    assert queue.run_due() == []  # the second pass asked for nothing more


def test_a_later_pass_that_needs_no_revisit_cancels_the_one_asked_for_before():
    clock, passes = Clock(), []

    def work(key, fresh):
        passes.append(fresh)
        return 10.0 if len(passes) == 1 else None  # pods not ready: look again; then an event: they are

    queue = WorkQueue(work, clock=clock)
    queue.submit("run")
    clock.now += 2
    queue.submit("run")
    clock.now += 1000
    assert queue.run_due() == [] and passes == [False, False]


def test_the_earliest_revisit_wins_and_the_resync_waits_for_quiet():
    clock, passes = Clock(), []
    queue = WorkQueue(lambda key, fresh: passes.append(fresh), clock=clock)
    queue.resync("run", 60)
    queue.later("run", 30)
    queue.later("run", 5)  # a backoff, sooner: it wins
    clock.now += 4
    assert queue.run_due() == []
    clock.now += 1
    assert queue.run_due() == ["run"] and passes == [False]  # a visit reads what it has: no re-read
    queue.resync("run", 60)  # the pass re-arms the resync: quiet is counted from now
    clock.now += 56
    assert queue.run_due() == [] and passes == [False]
    clock.now += 4
    assert queue.run_due() == ["run"] and passes == [False, True]  # quiet for 60 s: read it fresh
    clock.now += 1000
    assert queue.run_due() == []


def test_a_forgotten_key_is_not_revisited_and_a_failing_pass_does_not_stop_the_others():
    clock, seen = Clock(), []

    def work(key, fresh):
        seen.append(key)
        if key == "broken":
            raise RuntimeError("boom")

    queue = WorkQueue(work, clock=clock)
    for key in ("gone", "broken", "ok"):
        queue.later(key, 1)
    queue.forget("gone")
    clock.now += 1
    assert sorted(queue.run_due()) == ["broken", "ok"] and sorted(seen) == ["broken", "ok"]
    seen.clear()
    queue.later("broken", 0)
    clock.now += 1
    queue.run_due()
    assert seen == ["broken"]  # a pass that raised left no key stuck as busy


def test_the_timer_thread_runs_due_keys_on_its_own():
    done = threading.Event()
    queue = WorkQueue(lambda key, fresh: done.set(), min_delay=0.0)
    queue.start()
    try:
        queue.later("run", 0.05)
        assert done.wait(5)
    finally:
        queue.stop()


def test_a_pass_that_fails_is_tried_again_fresh_later_and_later_until_one_succeeds():
    """An API error in a timed pass (a 500, a 403) must not drop the key from every revisit: a run
    in back-off or with pending pods may get no event to wake it."""
    clock, passes = Clock(), []

    def work(key, fresh):
        passes.append(fresh)
        if len(passes) <= 3:
            raise RuntimeError("500 Internal Server Error")
        return None

    queue = WorkQueue(work, clock=clock)
    queue.later("run", 5.0)
    clock.now += 5
    assert queue.run_due() == ["run"] and passes == [False]  # failed (logged), not gone:
    waits = []
    while len(passes) < 4:
        waited = 0
        while not queue.run_due():
            clock.now += 0.5
            waited += 0.5
            assert waited < 1000, "the key that failed is never visited again"
        waits.append(waited)
    assert passes == [False, True, True, True] and waits == [1.0, 2.0, 4.0]  # fresh reads, doubling waits
    clock.now += 10_000
    assert queue.run_due() == []  # it succeeded: no more revisits it did not ask for
