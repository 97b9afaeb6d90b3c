"""The `selftaught` command: plan a run and price it, run a whole run locally, follow a run's
progress and render its report, run one stage (what pods run), start the operator, print the CRD,
score a judge's outputs on a leaderboard, serve a trained judge (or export it merged) and call it, build the tiny
quickstart model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from selftaught import __version__
from selftaught.api.benchmarks import BENCHMARKS
from selftaught.api.spec import Evaluate, GpuKind
from selftaught.pipeline.table import ORDER, STAGE_NAMES


def cmd_stage(args: argparse.Namespace) -> int:
    from selftaught.stage_process import main as stage_main

    return stage_main(args.name, args.iteration or 0, args.shard, args.run)


def writable_folder(path: str, option: str) -> Path:
    """`path`, created if need be, once a file could be written in it: an unwritable `--logs` is
    said before the run starts, not discovered by the first stage."""
    from selftaught.errors import InvalidInput

    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        why = "a file is in the way" if isinstance(error, FileExistsError | NotADirectoryError) else error.strerror.lower()
        raise InvalidInput(f"{option} {folder}: cannot write there: {why}") from None
    return folder


def cmd_run(args: argparse.Namespace) -> int:
    from selftaught.api.load import load_run
    from selftaught.errors import SelftaughtError, exit_code
    from selftaught.local.runner import Interrupted, run_local

    try:
        run_local(load_run(args.file), log_dir=writable_folder(args.logs, "--logs") if args.logs else None)
    except (KeyboardInterrupt, Interrupted) as stopped:  # the stage processes have stopped too
        print("interrupted; run the same command to resume", file=sys.stderr)
        return 128 + (stopped.signum if isinstance(stopped, Interrupted) else signal.SIGINT)
    except SelftaughtError as error:  # a bad spec, a failed stage (with the stage's own reason), an unreachable store
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    return 0


def _with_assumptions(run, args: argparse.Namespace):
    """`run` with the plan's options (--gpu, --judge-accuracy, --assume name=value) in spec.estimate."""
    import yaml
    from pydantic import ValidationError

    from selftaught.api.load import format_validation_error
    from selftaught.api.spec import SelfTaughtRunSpec
    from selftaught.errors import InvalidInput

    spec = run.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    assumed = spec.setdefault("estimate", {})
    pairs = list(args.assume or [])
    if args.gpu:
        pairs.append(f"gpu={args.gpu}")
    if args.judge_accuracy is not None:
        pairs.append(f"judgeAccuracy={args.judge_accuracy}")
    if args.instructions is not None:
        pairs.append(f"instructions={args.instructions}")
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidInput(f"--assume {pair!r}: write NAME=VALUE, e.g. judgeAccuracy=0.6 or throughput.decodeTflops=50")
        *parents, last = name.split(".")
        section = assumed
        for part in parents:
            section = section.setdefault(part, {})
        section[last] = yaml.safe_load(value)
    try:
        return run.model_copy(update={"spec": SelfTaughtRunSpec.model_validate(spec)})
    except ValidationError as error:
        raise InvalidInput(f"the plan's assumptions: {format_validation_error(error, 'spec.')}") from None


def _inputs_here(run, store):
    """The estimate's inputs for a run whose store we read: a local folder ran on this machine, an
    S3 store on a cluster (as the operator prices it)."""
    from selftaught.store import LocalStore
    from selftaught.views.plan_text import plan_inputs

    if isinstance(store, LocalStore):
        from selftaught.local.machine import probe
        from selftaught.local.runner import local_inputs

        return local_inputs(run, probe())
    return plan_inputs(run)


def _target(args: argparse.Namespace):
    """(run, store) of `selftaught status/report TARGET`: a run file, or a run's folder in a store."""
    from selftaught.api.load import load_run
    from selftaught.views.overview import open_run

    target = Path(args.target)
    if target.is_file():
        return open_run(load_run(target))
    return open_run(None, args.target, endpoint=args.endpoint)


def _errors(command):
    """A subcommand whose SelftaughtError is one line on stderr and exit code 2 (something must
    change first) or 1 (try again later): `errors.exit_code`."""
    import functools

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from selftaught.errors import SelftaughtError, exit_code

        try:
            return command(args)
        except SelftaughtError as error:
            print(f"error: {error}", file=sys.stderr)
            return exit_code(error)

    return run


def _camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camel(value):
    """`value` with every key in camelCase, as every JSON the command prints spells it (the CRD's way)."""
    if isinstance(value, dict):
        return {_camel_key(str(key)): camel(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [camel(item) for item in value]
    return value


def _machine_for_plan(args: argparse.Namespace):
    """(machine, where) of `plan --local`: this machine, or with --gpus (or --gpu on a machine
    without GPUs) a preview of one with that many GPUs of that kind."""
    from selftaught.local.machine import probe
    from selftaught.local.placement import GiB, Machine
    from selftaught.views.estimate import RATES

    machine = probe()
    if args.gpus is None and not (args.gpu and args.gpu != "cpu" and not machine.devices):
        return machine, "on this machine (" + (f"{len(machine.devices)} GPU(s))" if machine.devices else "CPU)")
    kind = args.gpu or "H100"
    count = args.gpus if args.gpus is not None else 1
    if count == 0 or kind == "cpu":
        from selftaught.local.placement import CPU

        return CPU, "on a machine without GPUs (a preview: --gpus 0)"
    memory = int(RATES[kind].memory_gib * GiB)
    preview = Machine(tuple(str(i) for i in range(count)), (memory,) * count, (f"NVIDIA {kind}",) * count)
    return preview, f"on a machine with {count} {kind} GPU{'s' if count > 1 else ''} (a preview: --gpus {count} --gpu {kind}; this machine has {len(machine.devices) or 'no'} GPU{'' if len(machine.devices) == 1 else 's'})"


@_errors
def cmd_plan(args: argparse.Namespace) -> int:
    from selftaught.api.load import load_run
    from selftaught.views.estimate import estimate
    from selftaught.views.paths import path_problems
    from selftaught.views.plan_text import format_plan, plan_inputs

    run = _with_assumptions(load_run(args.file), args)
    problems = path_problems(run.spec)
    if problems:  # before any number: an estimate of a typo is no estimate
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    local = args.local or args.gpus is not None or not run.spec.storage.uri.startswith("s3://")  # a folder store: only `selftaught run` runs it
    if local:
        from selftaught.local.runner import local_inputs

        machine, where = _machine_for_plan(args)
        inputs = local_inputs(run, machine)
    else:
        inputs = plan_inputs(run)
        generation = run.spec.generation
        where = f"on a cluster ({generation.shards} shard(s) per generation stage, {min(generation.parallelism, generation.shards)} pod(s) at once)"
    result = estimate(run.spec, inputs)
    if run.spec.reuse.enabled:
        result = _planned_reuse(run, result)
    if args.json:
        from dataclasses import asdict

        document = {**asdict(result), "gpuHours": result.gpu_hours, "hours": result.hours, "generatedTokens": result.generated_tokens}
        print(json.dumps(camel(document), indent=2))
    else:
        print(format_plan(run.metadata.name, result, where, inputs))
    return 0 if not result.unknown else 2


def _planned_reuse(run, result):
    """`result` with the stages an earlier run already published (spec.reuse) priced as saved."""
    from selftaught.pipeline.reuse import open_lineage, planned_reuse
    from selftaught.pipeline.runstore import open_run_store
    from selftaught.pipeline.scan import scan
    from selftaught.views.estimate import with_reuse

    lineage, store = open_lineage(run.spec), open_run_store(run)
    return with_reuse(result, planned_reuse(lineage, run.spec, scan(store).manifests, store))


@_errors
def cmd_compare(args: argparse.Namespace) -> int:
    from selftaught.api.load import load_run
    from selftaught.views.compare import compared, format_table, render
    from selftaught.views.overview import open_run

    runs = []
    for target in args.runs:  # a run file, or a run's folder in a store (as status and report take)
        run, store = open_run(load_run(Path(target))) if Path(target).is_file() else open_run(None, target, endpoint=args.endpoint)
        runs.append(compared(store, run))
    print(format_table(runs))
    output = Path(args.html)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(runs))
    print(f"\ncurves on common axes: {output}")
    return 0


@_errors
def cmd_status(args: argparse.Namespace) -> int:
    import time

    from selftaught.local.holder import runner_of
    from selftaught.pipeline.planner import plan
    from selftaught.pipeline.scan import scan
    from selftaught.views.display import StageDisplay
    from selftaught.views.overview import brief_stage, overview, running_views
    from selftaught.views.state import Phase, run_state

    run, store = _target(args)
    inputs = _inputs_here(run, store)
    resume = f"selftaught run {args.target}" if Path(args.target).is_file() else "selftaught run RUN.yaml"
    runner = runner_of(store)
    progress = scan(store)
    state = run_state(store, progress, plan(run.spec, progress.done), runner)
    if args.output:  # one document, for scripts
        import yaml

        from selftaught.views.overview import overview_document

        document = overview_document(store, run, inputs, runner)
        sys.stdout.write(json.dumps(document, indent=2) + "\n" if args.output == "json" else yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
        return state.exit_code
    print(overview(store, run, inputs, runner=runner, resume=resume))
    if not args.watch:
        return state.exit_code
    if state.over:  # nothing to wait for
        return 0 if state.phase == Phase.SUCCEEDED else 1
    displays: dict = {}
    announced = set(progress.done)
    try:
        while not state.over:  # until it succeeds, fails, or nobody runs it any more
            time.sleep(args.interval)
            progress = scan(store)
            state = run_state(store, progress, plan(run.spec, progress.done), runner_of(store))
            views = running_views(store, run, progress)
            for ref in [r for r in displays if r not in views]:
                displays.pop(ref).close()
            for ref in sorted(progress.done - announced, key=lambda r: (r.iteration, ORDER[r.name])):  # in the order they run
                print(f"{ref.label:<12} ✓ {brief_stage(ref, progress, store.uri, gpus=False, indent=15)}")
            announced |= progress.done
            for ref, view in views.items():
                displays.setdefault(ref, StageDisplay(ref.label, print)).update(view)
        for display in displays.values():
            display.close()
        print(overview(store, run, inputs, runner=runner_of(store), resume=resume))
    except KeyboardInterrupt:  # stop watching: the run goes on
        for display in displays.values():
            display.close()
        return 0
    return 0 if state.phase == Phase.SUCCEEDED else 1


def _started(args: argparse.Namespace):
    """`_target`, for a command that reads what a run made: one that never started is said so, and
    no folder is made for it."""
    from selftaught.errors import InvalidInput
    from selftaught.store.layout import RUN_SNAPSHOT

    run, store = _target(args)
    if not store.exists(RUN_SNAPSHOT):
        raise InvalidInput(f"{store.url()}: run {run.metadata.namespace}/{run.metadata.name} has not started here (no {RUN_SNAPSHOT}); `selftaught run` starts it")
    return run, store


@_errors
def cmd_report(args: argparse.Namespace) -> int:
    from selftaught.views.html_report import write_report

    run, store = _started(args)
    print(write_report(store, run, _inputs_here(run, store)))
    return 0


@_errors
def cmd_track(args: argparse.Namespace) -> int:
    from selftaught.api.load import load_run
    from selftaught.errors import InvalidInput
    from selftaught.views.tracking import sync

    run, store = _started(args)
    if Path(args.target).is_file():  # the file's tracking section, which may be new (a backfill): it changes no output
        run = run.model_copy(update={"spec": run.spec.model_copy(update={"tracking": load_run(Path(args.target)).spec.tracking})})
    if run.spec.tracking.mlflow is None and run.spec.tracking.wandb is None:
        raise InvalidInput(f"{args.target}: no spec.tracking.mlflow or spec.tracking.wandb: nothing to log to (docs/tracking.md)")
    outcome = sync(store, run)
    for backend, logged in outcome.logged.items():
        left = outcome.left.get(backend, [])
        said = f"logged {len(logged)} item(s)" + (f" ({', '.join(logged)})" if logged else "")
        print(f"{backend}: {said}; " + (f"{len(left)} not logged: {outcome.errors[backend]}" if left else "everything is logged"))
    return 1 if outcome.errors else 0


@_errors
def cmd_get(args: argparse.Namespace) -> int:
    from selftaught.views.results import fetch, select

    run, store = _started(args)
    selection = select(store, run, args.kind, iteration=args.iteration, stage=args.stage)
    written = fetch(store, selection, Path(args.output) / run.metadata.name)
    print(f"{selection.said}, from {store.uri}:", file=sys.stderr)
    for path in written:  # stdout: only the paths, for `vllm serve "$(selftaught get checkpoint RUN)"`
        print(path)
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    from selftaught.api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    from selftaught.controller.main import run_operator

    return run_operator(namespaces=args.namespace, all_namespaces=args.all_namespaces)


def cmd_score(args: argparse.Namespace) -> int:
    if args.endpoint:
        return _score_endpoint(args)
    from selftaught.method.scoring import check_record, score
    from selftaught.store.jsonl import local_json_objects

    bad: list[str] = []
    scored = 0

    def records():
        nonlocal scored
        for number, record in local_json_objects(args.file):
            reason = check_record(record, args.benchmark) if isinstance(record, dict) else record
            if reason is not None:
                bad.append(f"{args.file}:{number}: {reason}")
                continue
            scored += 1
            yield record

    try:
        report = score(records(), args.benchmark)
    except OSError as error:
        print(f"error: {args.file}: {error.strerror or error}", file=sys.stderr)
        return 2
    if bad:
        for message in bad:
            print(message, file=sys.stderr)
        return 2
    if not scored:  # never an accuracy over nothing
        print(f"error: {args.file}: no records to score (one JSON object per line, docs/evaluation.md)", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


@_errors
def _score_endpoint(args: argparse.Namespace) -> int:
    """The judge behind --endpoint, asked and scored as the evaluate stage does a run's judge."""
    from selftaught.client import score_endpoint, write_jsonl
    from selftaught.engines.endpoint import EndpointEngine

    settings = Evaluate(
        benchmark=args.benchmark, max_tokens=args.max_tokens, position_consistency=args.position_consistency, majority_vote=args.majority_vote,
        mode="rating" if args.mode == "rating" else "pairwise",
    )  # fmt: skip
    engine = EndpointEngine(args.endpoint, args.model, concurrency=args.concurrency)
    report, records, skipped = score_endpoint(args.file, args.benchmark, engine, settings, seed=args.seed, skip_bad=args.skip_bad)
    if args.outputs:
        write_jsonl(args.outputs, records)  # `selftaught score OUTPUTS` scores them again, with no endpoint
    if skipped.skipped:
        print(f"skipped {skipped.skipped} bad records; the first: {'; '.join(skipped.examples[:3])}", file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else format_report(report, title=f"{report['evaluated']} ({engine.model} at {args.endpoint})"))
    return 0


@_errors
def cmd_serve(args: argparse.Namespace) -> int:
    from selftaught.pipeline.served import read_serve_document
    from selftaught.serve_process import exec_server, served_from_run

    served = served_from_run(args.target, iterations=args.iteration or (), endpoint=args.endpoint) if args.target else read_serve_document()
    exec_server(served, host=args.host, port=args.port)


@_errors
def cmd_export(args: argparse.Namespace) -> int:
    from selftaught.export import export_checkpoint
    from selftaught.serve_process import served_from_run

    export_checkpoint(served_from_run(args.target, iteration=args.iteration, endpoint=args.endpoint), Path(args.output))
    return 0


@_errors
def cmd_judge(args: argparse.Namespace) -> int:
    from selftaught.client import JudgeClient, Pairwise, write_jsonl

    client = JudgeClient(args.endpoint, model=args.model, format=Pairwise(orders=args.orders), max_tokens=args.max_tokens, concurrency=args.concurrency)
    results = client.judge_file(args.file)
    rows = [result.as_dict() for result in results]
    if args.output:
        write_jsonl(args.output, rows)
    else:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    decided = [r for r in results if r.verdict]
    summary = f"judged {len(results)} pairs: A {sum(r.verdict == 'A' for r in decided)}, B {sum(r.verdict == 'B' for r in decided)}, undecided {len(results) - len(decided)}"
    if args.orders == "both":
        summary += f"; position consistent {sum(bool(r.consistent) for r in results)}/{len(results)}"
    print(summary + (f"; written to {args.output}" if args.output else ""), file=sys.stderr)
    return 0


def format_report(report: dict, title: str | None = None) -> str:
    """The readable table of `selftaught score`: every number at two decimals with its n and its 95 %
    interval (`[low, high]`; the exact values are in `--json`)."""
    from selftaught.views.numbers import estimate

    intervals = report.get("intervals") or {}
    evaluated = report.get("evaluated") or report["benchmark"]
    what = title or (evaluated if evaluated != "custom set" else f"custom set (scored in {report['benchmark']}'s format; not a {report['benchmark']} number)")
    lines = [f"{what}: {report['examples']} examples, accuracy {estimate(report['accuracy'], intervals.get('accuracy'))}"]
    custom = report["custom"]
    subset_intervals = intervals.get("subsets") or {}
    rows = [(name, name, accuracy) for name, accuracy in report["subsets"].items()]
    rows += [(f"{name} (custom)", name, accuracy) for name, accuracy in custom["subsets"].items()]
    if rows:
        width = max(len("subset"), *(len(row[0]) for row in rows))
        lines += ["", f"{'subset':<{width}}  {'n':>6}  {'accuracy [95% CI]':<18}  {'errors':>6}"]
        lines += [
            f"{label:<{width}}  {report['counts'][name]:>6}  {estimate(accuracy, subset_intervals.get(name)):<18}  {report['errors'][name]:>6}"
            for label, name, accuracy in rows
        ]
    section_intervals = intervals.get("sections") or {}
    width = max([len("overall"), *(len(name) for name in report["sections"])])
    lines += ["", f"{'section':<{width}}  {'n':>6}  score [95% CI]"]
    for name, value in report["sections"].items():
        interval = section_intervals.get(name) or {}
        shown = estimate(value, interval) if value is not None else "NaN (no prompt with both its ref and tied records)"
        lines.append(f"{name:<{width}}  {interval.get('n', ''):>6}  {shown}")
    overall_interval = intervals.get("overall") or {}
    overall = f"{'overall':<{width}}  {overall_interval.get('n', ''):>6}  {estimate(report['overall'], overall_interval)}"
    if report["partial"]:
        missing = [", ".join(report["missing"])] if report["missing"] else []
        if report["missing_subsets"]:
            shown = report["missing_subsets"][:4]
            more = len(report["missing_subsets"]) - len(shown)
            missing.append("subsets " + ", ".join(shown) + (f" and {more} more" if more else ""))
        overall += f"  (partial: missing {'; '.join(missing)})"
    lines.append(overall)
    if report.get("rating_mode") and report["benchmark"] == "rewardbench":
        lines.append("rating mode (each answer rated alone): not comparable to the RewardBench leaderboard, whose generative judges give a pairwise verdict")
    if custom["examples"]:
        lines += ["", f"custom (not in overall): {custom['examples']} examples, score {estimate(custom['score'], intervals.get('custom'))}"]
    if report["position_consistent"] is not None:
        consistent = intervals.get("position_consistent") or {}
        lines += ["", f"position consistent (right in both orders): {estimate(report['position_consistent'], consistent, consistent.get('n'))}"]
    orders = report.get("orders")
    if orders:
        order_intervals = intervals.get("orders") or {}
        lines.append(
            f"by order, {orders['pairs']} pairs judged both ways: right answer shown as A {estimate(orders['right_is_a'], order_intervals.get('right_is_a'))}, "
            f"as B {estimate(orders['right_is_b'], order_intervals.get('right_is_b'))}, both orders {estimate(orders['both'], order_intervals.get('both'))}"
        )
    if report["majority_vote"] is not None:
        lines += ["", format_report(report["majority_vote"], title="majority vote")]
    return "\n".join(lines)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from selftaught.dev.tiny_model import build_tiny_model, read_instructions

    output = Path(args.output)
    if (output / "config.json").is_file() and not args.force:
        print(f"tiny model: {output} already exists (use --force to rebuild)")
        return 0
    build_tiny_model(output, read_instructions(Path(args.instructions)), steps=args.steps)
    return 0


def cmd_testbed(args: argparse.Namespace) -> int:
    from selftaught.dev.testbed import build_testbed

    folder = Path(args.output)
    if (folder / "seed" / "config.json").is_file() and not args.force:
        print(f"testbed: {folder} already exists (use --force to rebuild)")
        return 0
    build_testbed(folder, world=args.world, seed=args.seed, steps=args.steps, unlearn_steps=args.unlearn_steps)
    return 0


class _Commands(argparse._SubParsersAction):
    """Subcommands whose own `--help` opens with what they do: their one-line help, unless they
    have a description of their own."""

    def add_parser(self, name, **kwargs):
        if kwargs.get("help") and not kwargs.get("description"):
            kwargs["description"] = kwargs["help"][:1].upper() + kwargs["help"][1:] + "."
        return super().add_parser(name, **kwargs)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)


def gpu_kind(value: str) -> str:
    """A GPU kind as the estimate's table spells it, whatever the case (`h100`, `l40s`)."""
    kinds = {kind.lower(): kind for kind in GpuKind.__args__}
    if value.lower() not in kinds:
        raise argparse.ArgumentTypeError(f"unknown GPU kind {value!r}: choose one of {', '.join(GpuKind.__args__)}")
    return kinds[value.lower()]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="selftaught", description=__doc__)
    parser.add_argument("--version", action="version", version=f"selftaught {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a whole SelfTaughtRun on this machine (the local default)")
    run.add_argument("file", help="a SelfTaughtRun manifest (YAML)")
    run.add_argument(
        "--logs",
        help="folder for each stage's log while it runs (default: the run's folder under the system temporary directory, replaced on each start); "
        "each log is also kept in the run's store, <stage>/_logs/",
    )
    run.set_defaults(func=cmd_run)

    planning = sub.add_parser("plan", help="print the stages a run creates and what they cost: tokens, GPU-hours, time (docs/cost.md)")
    planning.add_argument("file", help="a SelfTaughtRun manifest (YAML)")
    planning.add_argument(
        "--local", action="store_true", help="plan it as `selftaught run` runs it on this machine (the default for a run whose store is a local folder; else as the operator runs it)"
    )
    planning.add_argument(
        "--gpus", type=int, metavar="N", help="plan it for `selftaught run` on a machine with N GPUs (of kind --gpu, default H100): a preview from any machine"
    )
    planning.add_argument("--gpu", type=gpu_kind, metavar="|".join(GpuKind.__args__), help="GPU kind to price it on, any case (spec.estimate.gpu)")
    planning.add_argument("--instructions", type=int, help="records in data.instructions, where they cannot be counted (spec.estimate.instructions)")
    planning.add_argument("--judge-accuracy", type=float, help="assumed probability that one sampled judgment is right (spec.estimate.judgeAccuracy)")
    planning.add_argument(
        "--assume", action="append", metavar="NAME=VALUE", help="any spec.estimate field, e.g. answerTokens=800 or throughput.decodeTflops=50 (repeatable)"
    )
    planning.add_argument("--json", action="store_true", help="print the estimate as JSON")
    planning.set_defaults(func=cmd_plan)

    status = sub.add_parser(
        "status",
        help="print how far a run is, from its store: stages, progress and time left, numbers, cost",
        description="Print how far a run is, from its store alone (a run started here, elsewhere or on a cluster): its stages, "
        "progress and time left, numbers and cost; for a local run, whether it failed (the stage's reason, message and log), "
        "runs, or nobody runs it. Exit status: 1 when it failed, else 0; with --watch, 0 once it succeeded, 1 when it failed "
        "or nobody runs it any more.",
    )
    status.add_argument("target", help="a SelfTaughtRun manifest, or the run's folder in its store (<storage.uri>/<namespace>/<name>)")
    status.add_argument("--endpoint", help="S3 endpoint URL for a store URI (MinIO, Ceph RGW)")
    status.add_argument(
        "--watch", "-w", action="store_true", help="follow the running stages until the run succeeds, fails or nobody runs it any more (Ctrl-C stops watching)"
    )
    status.add_argument("--interval", type=float, default=5.0, help=argparse.SUPPRESS)
    status.add_argument("-o", "--output", choices=["json", "yaml"], help="print it as one JSON or YAML document (camelCase keys, as the CRD's status)")
    status.set_defaults(func=cmd_status)

    comparing = sub.add_parser(
        "compare",
        help="runs side by side: the recipe knobs that differ, accuracy per iteration with 95%% intervals, GPU-hours; and one HTML page of their curves",
    )
    comparing.add_argument("runs", nargs="+", metavar="RUN", help="a SelfTaughtRun manifest, or a run's folder in its store (local or s3://)")
    comparing.add_argument("--html", default="compare.html", help="where to write the page with the runs' curves (default: ./compare.html)")
    comparing.add_argument("--endpoint", help="S3 endpoint URL for store URIs")
    comparing.set_defaults(func=cmd_compare)

    report = sub.add_parser("report", help="render the run's HTML report into its store (report/index.html) and print where")
    report.add_argument("target", help="a SelfTaughtRun manifest, or the run's folder in its store")
    report.add_argument("--endpoint", help="S3 endpoint URL for a store URI")
    report.set_defaults(func=cmd_report)

    getting = sub.add_parser(
        "get",
        help="copy a run's results out of its store (local or S3): the judge's checkpoint, metrics, the report, the stage logs",
        description="Copy a run's results out of its store into DIR/<name>/, in the store's layout without the attempt folders "
        "(DIR/<name>/iter-002/checkpoint/, iter-001/metrics.json, report/index.html, <stage>/logs/), and print the paths written. "
        "Live logs on a cluster: kubectl logs -n NAMESPACE -l selftaught.dev/run=NAME --prefix -f.",
    )
    getting.add_argument("kind", choices=["checkpoint", "metrics", "report", "logs"])
    getting.add_argument("target", metavar="RUN", help="a SelfTaughtRun manifest, or the run's folder in its store (<storage.uri>/<namespace>/<name>)")
    getting.add_argument(
        "--iteration", metavar="N|best", help="the iteration: a number or best, the best evaluated (default: best for checkpoint, every one for metrics and logs)"
    )
    getting.add_argument("--stage", metavar="STAGE", help="logs: only this stage's, e.g. judge-1")
    getting.add_argument("-o", "--output", metavar="DIR", default=".", help="where to put them (default: the current folder)")
    getting.add_argument("--endpoint", help="S3 endpoint URL for a store URI (MinIO, Ceph RGW)")
    getting.set_defaults(func=cmd_get)

    tracking = sub.add_parser(
        "track",
        help="log to the run's MLflow or W&B whatever of it they have not got yet (docs/tracking.md)",
        description="Log a run to the tracking servers of its spec.tracking (a run file's section applies, so a run made "
        "before tracking was configured is backfilled): the parameters, every finished stage's figures, accuracy per "
        "iteration, the report and the best judge. What was logged is recorded in the run's store, so running it again "
        "logs only what is new. Exit status: 1 when a server did not take everything (try again later), else 0.",
    )
    tracking.add_argument("target", metavar="RUN", help="a SelfTaughtRun manifest, or the run's folder in its store (<storage.uri>/<namespace>/<name>)")
    tracking.add_argument("--endpoint", help="S3 endpoint URL for a store URI (MinIO, Ceph RGW)")
    tracking.set_defaults(func=cmd_track)

    stage = sub.add_parser("stage", help="run one stage of a run (the command every Job runs)")
    stage.add_argument("name", choices=STAGE_NAMES)
    stage.add_argument("--iteration", type=int, default=0, help="iteration of judge/train/evaluate")
    stage.add_argument("--shard", type=int, help="one shard only (default: $JOB_COMPLETION_INDEX, else all)")
    stage.add_argument("--run", help="manifest file (default: the SELFTAUGHT_RUN environment variable)")
    stage.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # deepspeed launcher
    stage.set_defaults(func=cmd_stage)

    operator = sub.add_parser("operator", help="run the Kubernetes operator")
    operator.add_argument("--namespace", "-n", action="append", default=[], help="namespace to watch (repeatable)")
    operator.add_argument("--all-namespaces", "-A", action="store_true", help="watch the whole cluster")
    operator.set_defaults(func=cmd_operator)

    crd = sub.add_parser("crd", help="print the SelfTaughtRun CustomResourceDefinition (YAML)")
    crd.set_defaults(func=cmd_crd)

    scoring = sub.add_parser("score", help="score a judge's outputs (or, with --endpoint, any OpenAI-compatible judge) the way a leaderboard's official scorer does")
    scoring.add_argument(
        "file", help="JSONL, one record per example (docs/evaluation.md); with --endpoint, the benchmark's examples (what data.evaluation.source takes)"
    )
    scoring.add_argument("--benchmark", choices=list(BENCHMARKS), default=Evaluate().benchmark)
    scoring.add_argument("--json", action="store_true", help="print the report as one JSON object")
    asking = scoring.add_argument_group("judging with an endpoint (as the evaluate stage does; docs/serving.md)")
    asking.add_argument("--endpoint", help="an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1: ask this judge, then score it")
    asking.add_argument("--model", help="the model to ask (default: the one the endpoint serves)")
    asking.add_argument("--max-tokens", type=int, default=Evaluate().max_tokens, help="tokens per judgment (evaluate.maxTokens)")
    asking.add_argument(
        "--position-consistency", action=argparse.BooleanOptionalAction, default=True, help="also judge each pair swapped (evaluate.positionConsistency)"
    )
    asking.add_argument("--majority-vote", type=int, default=0, metavar="K", help="also sample K judgments per pair (evaluate.majorityVote)")
    asking.add_argument(
        "--mode", choices=("pairwise", "rating"), default="pairwise", help="rating: rate each answer 1-10, for a pointwise judge (evaluate.mode)"
    )
    asking.add_argument("--seed", type=int, default=0, help="the seed of each pair's order, as a run's spec.seed")
    asking.add_argument("--skip-bad", action="store_true", help="skip bad records (onBadRecord: skip) instead of stopping at the first")
    asking.add_argument("--outputs", help="also write the judge's outputs here (JSONL that `selftaught score` reads)")
    asking.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    scoring.set_defaults(func=cmd_score)

    serve = sub.add_parser("serve", help="serve a run's trained judge on this machine: vLLM's OpenAI-compatible server (docs/serving.md)")
    serve.add_argument("target", nargs="?", help="a SelfTaughtRun manifest, or the run's folder in its store (default: $SELFTAUGHT_SERVE, what a server pod gets)")
    serve.add_argument(
        "--iteration", type=int, action="append",
        help="serve this iteration's checkpoint (0: the seed); default: spec.serve.iteration, else the best evaluated. Given more than once "
        "(a train.lora run): every one's adapter on one base, each as <run>-iteration-<i>, the first also as <run>",
    )  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--endpoint", help="S3 endpoint URL for a store URI (MinIO, Ceph RGW)")
    serve.set_defaults(func=cmd_serve)

    export = sub.add_parser("export", help="write a run's judge as a full Hugging Face checkpoint: a LoRA adapter merged into its base (docs/serving.md)")
    export.add_argument("target", help="a SelfTaughtRun manifest, or the run's folder in its store")
    export.add_argument("output", help="a new (or empty) folder for the checkpoint")
    export.add_argument("--iteration", type=int, help="this iteration's checkpoint (0: the seed); default: spec.serve.iteration, else the best evaluated")
    export.add_argument("--endpoint", help="S3 endpoint URL for a store URI (MinIO, Ceph RGW)")
    export.set_defaults(func=cmd_export)

    judging = sub.add_parser("judge", help="judge pairs of responses with a served judge: verdict, position consistency and reasoning per pair")
    judging.add_argument("file", help='JSONL, one pair per line: {"instruction", "response_a", "response_b", "id" (optional)}')
    judging.add_argument("--endpoint", required=True, help="the judge's OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    judging.add_argument("--model", help="the model to ask (default: the one the endpoint serves)")
    judging.add_argument("--orders", choices=("both", "given"), default="both", help="judge each pair as given and swapped (default), or as given only")
    judging.add_argument("--max-tokens", type=int, default=Evaluate().max_tokens, help="tokens per judgment")
    judging.add_argument("--output", help="write the results here (JSONL) instead of to stdout")
    judging.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    judging.set_defaults(func=cmd_judge)

    dev = sub.add_parser("dev", help="developer tools").add_subparsers(dest="tool", required=True)
    tiny = dev.add_parser("tiny-model", help="build the tiny offline seed model of the quickstart")
    tiny.add_argument("output")
    tiny.add_argument("--instructions", default="examples/data/instructions.jsonl")
    tiny.add_argument("--steps", type=int, default=400)
    tiny.add_argument("--force", action="store_true")
    tiny.set_defaults(func=cmd_tiny_model)
    testbed = dev.add_parser("testbed", help="build the CPU testbed: a seed that judges arithmetic at chance, its instructions and held-out pairs")
    testbed.add_argument("output")
    testbed.add_argument(
        "--world", choices=["easy", "hard", "hard-rated"], default="easy", help="hard: the seed is then taught to misjudge a third of the pairs; hard-rated: that seed then also rates one answer 1-10 (docs/testbed.md, The hard world)"
    )
    testbed.add_argument("--seed", type=int, default=0, help="the seed of the questions' split and of the model's weights")
    testbed.add_argument("--steps", type=int, default=1000, help="training steps with verdicts that follow the seed's reading")
    testbed.add_argument("--unlearn-steps", type=int, default=600, help="then steps with coin-flip verdicts")
    testbed.add_argument("--force", action="store_true")
    testbed.set_defaults(func=cmd_testbed)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=os.environ.get("SELFTAUGHT_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpx2"):  # a line per request of `judge` and `score --endpoint`
        logging.getLogger(chatty).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C in any command (`run` says how to resume): one line, no traceback
        print("interrupted", file=sys.stderr)
        code = 128 + signal.SIGINT
    except BrokenPipeError:  # `selftaught plan RUN.yaml | head`: the reader had enough, which is no error to show
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit, when Python flushes stdout again
        code = 128 + 13  # as a process that SIGPIPE ended
    sys.exit(code)
