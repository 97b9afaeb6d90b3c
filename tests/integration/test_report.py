"""The run's report, as a person sees it: rendered from a finished run's store and opened in a
real headless browser (Debian's Chromium; `.ci/run` installs it), where every plot must load,
nothing may be fetched from the network, and the numbers on the page must be the run's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selftaught.api.load import parse_run
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store.layout import REPORT
from selftaught.store.manifest import Manifest, write_manifest
from selftaught.views.estimate import inputs_for
from selftaught.views.html_report import write_report
from tests.browser import find_browser, load_page

#: a finished two-iteration run, as its stages left it: (stage, counts, summary, seconds)
STAGES = [
    (StageRef("categorize"), {"records": 50, "tokens": 1200}, {"instructions": 50, "categorized": 50, "unparsed": 0}, 9.3),
    (StageRef("select"), {}, {"selected": 47}, 0.1),
    (StageRef("pairs"), {"train": 37, "heldout": 10, "tokens": 3500}, {"pairs": 37, "heldOut": 10}, 10.2),
    (StageRef("evaluate", 0), {"examples": 10, "tokens": 550}, {"benchmark": "rewardbench", "examples": 10, "accuracy": 0.5, "custom": 0.5, "positionConsistent": 0.0, "majorityVote": 0.4}, 9.0),
    (StageRef("judge", 1), {"items": 74, "samples": 222, "tokens": 2671, "kept": 73, "training_examples": 72},
     {"tried": 74, "kept": 73, "keepRate": 0.9865, "trainingExamples": 72, "truncated": 0, "tokensPerKept": 36.1, "fixedNTokensPerKept": 88.9}, 8.8),
    (StageRef("train", 1), {"examples": 72}, {"checkpoint": "/runs/local/quickstart/iter-001/train/attempt-1/checkpoint", "examples": 72}, 24.0),
    (StageRef("evaluate", 1), {"examples": 10, "tokens": 550}, {"benchmark": "rewardbench", "examples": 10, "accuracy": 0.9, "custom": 0.9, "positionConsistent": 0.8, "majorityVote": 0.9}, 9.1),
    (StageRef("judge", 2), {"items": 74, "samples": 180, "tokens": 2160, "kept": 74, "training_examples": 74},
     {"tried": 74, "kept": 74, "keepRate": 1.0, "trainingExamples": 74, "truncated": 0, "tokensPerKept": 29.2, "fixedNTokensPerKept": 93.4}, 8.7),
    (StageRef("train", 2), {"examples": 74}, {"checkpoint": "/runs/local/quickstart/iter-002/train/attempt-2/checkpoint", "examples": 74}, 23.5),
    (StageRef("evaluate", 2), {"examples": 10, "tokens": 540, "vote_samples": 52, "vote_all": 80, "vote_tokens": 520, "vote_tokens_saved": 280, "vote_rounds": 21},
     {"benchmark": "rewardbench", "examples": 10, "accuracy": 1.0, "custom": 1.0, "positionConsistent": 1.0, "majorityVote": 0.9,
      "voteSamplesPerExample": 5.2, "voteTokens": 520, "voteTokensSaved": 280}, 9.0),
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
            accuracy = summary["accuracy"]
            metrics = {"benchmark": "rewardbench", "examples": 10, "accuracy": accuracy, "sections": {}, "subsets": {},
                       "custom": {"examples": 10, "score": accuracy, "subsets": {"Knowledge and Reasoning": accuracy, "Mathematical reasoning": accuracy - 0.1 * (ref.iteration < 2)}}}  # fmt: skip
            key = f"{ref.prefix}/metrics.json"
            store.write_text(key, json.dumps(metrics))
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
        elif ref.name == "evaluate":
            assert cells["accuracy"] == f"{summary['accuracy']:.4f}" and cells["majorityVote"] == f"{summary['majorityVote']:.4f}"
            assert cells["positionConsistent"] == f"{summary['positionConsistent']:.4f}"
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
    assert "maj-vote  samples  tok saved" in table[0] and table[-1].split()[-4:-1] == ["0.900", "5.2", "280"]
