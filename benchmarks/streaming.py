"""CPU stages stream: rows/s and peak RSS at 100k and 1M records.

Each measurement runs in a fresh child process so its peak RSS is its own. The baseline is a
plain JSONL read + write of the same records; `x baseline` is stage time / baseline time, and
`RSS 1M/100k` must stay near 1 (memory does not grow with the record count).
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

CATEGORIES = ["Knowledge and Reasoning", "Mathematical reasoning", "Coding", "Other"]


def make_categorized(path: Path, count: int) -> None:
    with path.open("w") as out:
        for i in range(count):
            record = {"id": f"r{i}", "instruction": f"question number {i} about topic {i % 997}", "category": CATEGORIES[i % 4], "complexity": 1 + i % 10}
            out.write(json.dumps(record) + "\n")


def make_judgments(path: Path, count: int) -> None:
    messages = [{"role": "system", "content": "judge"}, {"role": "user", "content": "question and two answers"}]
    with path.open("w") as out:
        for i in range(count):
            record = {"id": f"p{i}", "order": "AB", "winner": "A" if i % 3 else "B", "messages": messages, "judgment": "A is better. [[A]]"}
            out.write(json.dumps(record) + "\n")


def make_scored(path: Path, count: int) -> None:
    with path.open("w") as out:
        for i in range(count):
            record = {"id": f"e{i}", "subset": ["math-prm", "hep-python", "alpacaeval-easy", "Coding"][i % 4], "winner": "AB"[i % 2],
                      "output": "A is better. [[A]]", "swapped_output": "[[B]]"}  # fmt: skip
            out.write(json.dumps(record) + "\n")


def work(kind: str, folder: str, queue) -> None:
    from selftaught.api.spec import Select
    from selftaught.method.judging import BalanceCounts, balance, sft_records
    from selftaught.method.scoring import score
    from selftaught.method.selection import Selector
    from selftaught.store import LocalStore
    from selftaught.store.jsonl import read_jsonl, write_jsonl

    store = LocalStore(folder)
    started = time.perf_counter()
    rows = 0
    if kind == "baseline":
        rows = write_jsonl(store, "copy.jsonl", read_jsonl(store, "categorized.jsonl")).records
    elif kind == "select":
        selector = Selector(Select(per_category_cap=5000, total_cap=20000), seed=0)
        for record in read_jsonl(store, "categorized.jsonl"):
            selector.offer(record)
            rows += 1
        write_jsonl(store, "selected.jsonl", selector.selected())
    elif kind == "balance+sft":
        counts = BalanceCounts()
        for record in read_jsonl(store, "judgments.jsonl"):  # pass 1: count winners
            rows += 1
            counts.a_wins += record["winner"] == "A"
            counts.b_wins += record["winner"] == "B"
        chosen = balance(read_jsonl(store, "judgments.jsonl"), counts, seed=0)  # pass 2: stream
        write_jsonl(store, "sft.jsonl", (example for r in chosen for example in sft_records(r)))
    elif kind == "metrics":
        rows = score(read_jsonl(store, "scored.jsonl"), "rewardbench")["examples"]  # one streaming pass
    seconds = time.perf_counter() - started
    queue.put((rows, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(kind: str, folder: str) -> tuple[int, float, float]:
    queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=work, args=(kind, folder, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main(sizes=(100_000, 1_000_000)) -> None:
    results: dict[tuple[str, int], tuple[int, float, float]] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            make_categorized(Path(folder) / "categorized.jsonl", size)
            make_judgments(Path(folder) / "judgments.jsonl", size)
            make_scored(Path(folder) / "scored.jsonl", size)
            for kind in ("baseline", "select", "balance+sft", "metrics"):
                results[(kind, size)] = measure(kind, folder)
    print(f"{'stage':<12} {'records':>9} {'rows/s':>10} {'x baseline':>10} {'peak RSS MB':>12} {'RSS 1M/100k':>12}")
    for kind in ("baseline", "select", "balance+sft", "metrics"):
        for size in sizes:
            rows, seconds, rss = results[(kind, size)]
            base = results[("baseline", size)][1]
            growth = rss / results[(kind, sizes[0])][2]
            print(f"{kind:<12} {size:>9,} {rows / seconds:>10,.0f} {seconds / base:>10.2f} {rss:>12.1f} {growth:>12.2f}")


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or (100_000, 1_000_000))
