"""A session fixture's one-time build runs on its own budget, not on the first test's timeout
(tests/conftest.py: own_time_budget)."""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import own_time_budget


@pytest.mark.timeout(2)
def test_a_build_longer_than_the_tests_timeout_does_not_fail_the_test_and_the_test_keeps_its_own_time():
    left_before, _ = signal.getitimer(signal.ITIMER_REAL)
    with own_time_budget(10):
        time.sleep(2.5)  # longer than this test's 2 s
    left_after, _ = signal.getitimer(signal.ITIMER_REAL)
    assert 0 < left_after <= left_before  # the test's own timer, given back


@pytest.mark.timeout(5)
def test_a_build_that_hangs_still_ends_at_its_budget():
    with pytest.raises(pytest.fail.Exception, match="Timeout"), own_time_budget(0.5):
        time.sleep(3)
