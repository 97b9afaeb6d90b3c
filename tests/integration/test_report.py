"""The run's report, as a person sees it: rendered from a finished run's store and opened in a
real headless browser (Debian's Chromium; `.ci/run` installs it), where every plot must load,
nothing may be fetched from the network, and the numbers on the page must be the run's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selftaught.api.load import parse_run
from selftaught.method.scoring import score
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.scan import scan
from selftaught.pipeline.table import StageRef
from selftaught.stages.evaluate import HELD_OUT_PAIRS, summarize
from selftaught.store.layout import REPORT
from selftaught.store.manifest import Manifest, write_manifest
from selftaught.views.estimate import estimate, inputs_for
from selftaught.views.html_report import collect, verdict, write_report
from selftaught.views.numbers import estimate as with_interval
from tests.browser import find_browser, load_page


def held_out_evaluation(iteration: int, right: int, consistent: int, vote_right: int, n: int = 10) -> tuple[dict, dict]:
    """The metrics and the summary an evaluate stage writes for n held-out pairs of which the judge
    gets `right` right (`consistent` of them in both orders too, `vote_right` by majority vote)."""
    records = []
    for i in range(n):
        winner, other = ("A", "B") if i % 2 else ("B", "A")
        records.append({
            "id": f"pair-{i}", "subset": "Knowledge and Reasoning" if i < 6 else "Mathematical reasoning", "winner": winner,
            "output": f"[[{winner if i < right else other}]]", "swapped_output": f"[[{other if i < consistent else winner}]]",
            "outputs": [f"[[{winner if i < vote_right else other}]]"] * 3,
        })  # fmt: skip
    metrics = score(records, "rewardbench", outcomes=True)
    metrics.update(iteration=iteration, evaluated=HELD_OUT_PAIRS)
    return metrics, summarize(metrics)


EVALUATIONS = {0: held_out_evaluation(0, 5, 0, 4), 1: held_out_evaluation(1, 9, 8, 9), 2: held_out_evaluation(2, 10, 10, 9)}
VOTES = {"voteSamplesPerExample": 5.2, "voteTokens": 520, "voteTokensSaved": 280}

#: a finished two-iteration run, as its stages left it: (stage, counts, summary, seconds)
STAGES = [
    (StageRef("categorize"), {"records": 50, "tokens": 1200}, {"instructions": 50, "categorized": 50, "unparsed": 0}, 9.3),
    (StageRef("select"), {}, {"selected": 47}, 0.1),
    (StageRef("pairs"), {"train": 37, "heldout": 10, "tokens": 3500}, {"pairs": 37, "heldOut": 10}, 10.2),
    (StageRef("evaluate", 0), {"examples": 10, "tokens": 550}, EVALUATIONS[0][1], 9.0),
    (StageRef("judge", 1), {"items": 74, "samples": 222, "tokens": 2671, "kept": 73, "training_examples": 72},
     {"tried": 74, "kept": 73, "keepRate": 0.9865, "trainingExamples": 72, "truncated": 0, "tokensPerKept": 36.1, "fixedNTokensPerKept": 88.9}, 8.8),
    (StageRef("train", 1), {"examples": 72}, {"checkpoint": "/runs/local/quickstart/iter-001/train/attempt-1/checkpoint", "examples": 72}, 24.0),
    (StageRef("evaluate", 1), {"examples": 10, "tokens": 550}, EVALUATIONS[1][1], 9.1),
    (StageRef("judge", 2), {"items": 74, "samples": 180, "tokens": 2160, "kept": 74, "training_examples": 74},
     {"tried": 74, "kept": 74, "keepRate": 1.0, "trainingExamples": 74, "truncated": 0, "tokensPerKept": 29.2, "fixedNTokensPerKept": 93.4}, 8.7),
    (StageRef("train", 2), {"examples": 74}, {"checkpoint": "/runs/local/quickstart/iter-002/train/attempt-2/checkpoint", "examples": 74}, 23.5),
    (StageRef("evaluate", 2), {"examples": 10, "tokens": 540, "vote_samples": 52, "vote_all": 80, "vote_tokens": 520, "vote_tokens_saved": 280, "vote_rounds": 21},
     {**EVALUATIONS[2][1], **VOTES}, 9.0),
]  # fmt: skip


def finished_run(tmp_path: Path):
    run = parse_run({
        "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "quickstart", "namespace": "local"},
        "spec": {"models": {"seed": {"source": "tiny-judge"}}, "data": {"instructions": {"source": "instructions.jsonl"}, "evaluation": {"heldOutFraction": 0.2}},
                 "storage": {"uri": str(tmp_path / "runs")}, "iterations": 2, "judge": {"samples": 8}},
    })  # fmt: skip
    store = open_run_store(run)
    for ref, counts, summary, seconds in STAGES:
        outputs = {}
        if ref.name == "evaluate":  # the scorer's report, with the held-out pairs' categories as subsets
            key = f"{ref.prefix}/metrics.json"
            store.write_text(key, json.dumps(EVALUATIONS[ref.iteration][0]))
            outputs[key] = {}
        write_manifest(store, ref.manifest_key, Manifest(stage=ref.name, iteration=ref.iteration, counts=counts, summary=summary, seconds=seconds, outputs=outputs))
    return run, store


IMAGES = "Array.from(document.images).map(i => ({id: i.id, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))"
CELLS = """Array.from(document.querySelectorAll('#iterations tbody tr')).map(tr => ({
  iteration: Number(tr.dataset.iteration),
  cells: Object.fromEntries(Array.from(tr.querySelectorAll('td[data-key]')).map(td => [td.dataset.key, td.textContent.trim()]))
}))"""
STAGE_ROWS = "Array.from(document.querySelectorAll('#stages tbody tr[data-stage]')).map(tr => [tr.dataset.stage, tr.querySelector('[data-key=seconds]').textContent])"


@pytest.mark.skipif(find_browser() is None, reason="no Chromium on this machine (.ci/run installs Debian's chromium; `apt-get install chromium` to run this check)")
def test_the_report_of_a_finished_run_shows_its_plots_offline_and_its_own_numbers(tmp_path):
    run, store = finished_run(tmp_path)
    url = write_report(store, run, inputs_for(run.spec))
    assert url == store.url(REPORT)
    page = Path(url)

    seen = load_page(page, {"images": IMAGES, "cells": CELLS, "stages": STAGE_ROWS, "title": "document.title"})

    images = seen.values["images"]
    assert [image["id"] for image in images] == ["plot-accuracy", "plot-keep", "plot-tokens", "plot-cost"]
    assert all(image["complete"] and image["width"] > 0 and image["height"] > 0 for image in images), images
    # the page itself, and nothing from anywhere else: no CDN, no font, no script
    assert [u for u in seen.requests if not u.startswith(("file://", "data:"))] == [] and seen.failed == []
    assert seen.values["title"] == "selftaught report: local/quickstart"

    rows = {row["iteration"]: row["cells"] for row in seen.values["cells"]}
    assert sorted(rows) == [0, 1, 2]
    for ref, _, summary, _ in STAGES:  # every number the stages reported, as the page shows it
        cells = rows.get(ref.iteration, {})
        if ref.name == "judge":
            assert (cells["tried"], cells["kept"], cells["keepRate"]) == (str(summary["tried"]), str(summary["kept"]), f"{summary['keepRate']:.4f}")
            assert (cells["trainingExamples"], cells["tokensPerKept"], cells["fixedNTokensPerKept"]) == (
                str(summary["trainingExamples"]), f"{summary['tokensPerKept']:.1f}", f"{summary['fixedNTokensPerKept']:.1f}"
            )
        elif ref.name == "evaluate":  # two decimals and the 95% interval
            assert cells["accuracy"] == with_interval(summary["accuracy"], summary["accuracyInterval"]) and cells["evaluationExamples"] == "10"
            assert cells["majorityVote"] == with_interval(summary["majorityVote"], summary["majorityVoteInterval"])
            assert cells["positionConsistent"] == with_interval(summary["positionConsistent"], summary["positionConsistentInterval"])
            assert cells["bothOrders"] == with_interval(summary["bothOrders"], summary["bothOrdersInterval"])
            assert cells["voteTokensSaved"] == (f"{summary['voteTokensSaved']:,d}" if "voteTokensSaved" in summary else "")
        elif ref.name == "train":
            assert cells["checkpoint"] == summary["checkpoint"]
    assert dict(seen.values["stages"]) == {ref.label: f"{seconds:,.1f}" for ref, _, _, seconds in STAGES}


def test_the_report_and_the_iteration_table_show_what_stopping_the_votes_saved(tmp_path):
    from selftaught.pipeline.scan import iteration_summaries, scan
    from selftaught.views.overview import iteration_table

    run, store = finished_run(tmp_path)
    page = Path(write_report(store, run, inputs_for(run.spec))).read_text()
    assert '<td data-key="voteTokensSaved" data-value="280">280</td>' in page
    assert '<td data-key="voteSamplesPerExample" data-value="5.2">5.20</td>' in page
    rows = iteration_summaries(scan(store))
    assert rows[-1]["voteTokensSaved"] == 280 and rows[-1]["voteSamplesPerExample"] == 5.2  # status.iterations[]
    table = iteration_table(rows)
    assert "maj-vote  samples  tok saved" in table[0] and table[-1].split()[-4:-1] == ["0.90", "5.2", "280"]
    assert "1.00 [0.72, 1.00]     10" in table[-1]  # accuracy with its 95% interval, and its n


def test_the_quickstarts_report_opens_with_its_verdict_and_never_calls_its_own_pairs_rewardbench(tmp_path):
    run, store = finished_run(tmp_path)
    page = Path(write_report(store, run, inputs_for(run.spec))).read_text()
    first = page.index("<h1>")
    # the first thing under the title: the best judge, against the seed, and whether it is noise.
    # The seed was right on 5 of the 10 pairs, iteration 2 on all 10: 5 better, 0 worse;
    # McNemar exact p = 2/32, mid-p = 1/32
    verdict = (
        "Best judge: iteration 2, accuracy 1.00 [0.72, 1.00] on 10 held-out pairs, against the seed&#x27;s 0.50 [0.24, 0.76]: +0.50, "
        "larger than the noise (McNemar&#x27;s mid-p 0.031 on the 10 examples both judged: 5 better, 0 worse)."
    )
    assert page.index('<p class="verdict" id="verdict">' + verdict) == page.index("</h1>", first) + len("</h1>\n")
    assert "Evaluated on 10 held-out pairs; chance is 0.50." in page
    assert "rewardbench" not in page.lower().replace("rewardbench&#x27;s format", "")  # only ever "scored in RewardBench's format"
    assert "The evaluation set is the held-out pairs, the run&#x27;s own data, scored in RewardBench&#x27;s format: not a benchmark number." in page


def test_a_difference_the_examples_cannot_tell_from_noise_is_called_so(tmp_path):
    run, store = finished_run(tmp_path)
    data = collect_report(store, run)
    data.metrics = {0: EVALUATIONS[0][0], 1: held_out_evaluation(1, 7, 7, 7)[0]}
    assert verdict(data) == (
        "Best judge: iteration 1, accuracy 0.70 [0.40, 0.89] on 10 held-out pairs, against the seed's 0.50 [0.24, 0.76]: +0.20, within the noise "
        "(McNemar's mid-p 0.25 on the 10 examples both judged: 2 better, 0 worse): these examples cannot tell the two judges apart."
    )
    data.metrics = {0: EVALUATIONS[0][0]}
    assert verdict(data) == "Only the seed judge (iteration 0) has been evaluated: accuracy 0.50 [0.24, 0.76] on 10 held-out pairs."


def test_status_and_the_stage_line_say_what_was_evaluated_with_intervals(tmp_path):
    from selftaught.pipeline.scan import scan
    from selftaught.views.overview import describe_stage

    _, store = finished_run(tmp_path)
    line = describe_stage(StageRef("evaluate", 2), scan(store))
    assert line.startswith("evaluated held-out pairs, examples 10, accuracy 1.00 [0.72, 1.00], positionConsistent 1.00 [0.72, 1.00], ")
    assert "orderA 1.00 [0.72, 1.00], orderB 1.00 [0.72, 1.00], bothOrders 1.00 [0.72, 1.00], majorityVote 0.90 [0.60, 0.98]" in line
    assert "rewardbench" not in line and "custom" not in line  # the held-out pairs' accuracy is the custom score: said once


def collect_report(store, run):
    progress = scan(store)
    return collect(store, run, progress, estimate(run.spec, inputs_for(run.spec)))
