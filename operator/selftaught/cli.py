"""The `selftaught` command: run a whole run locally, run one stage (what pods run), start the
operator, print the CRD, build the tiny quickstart model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from selftaught import __version__


def _load_run(path: str | None):
    from selftaught.api.load import load_run, parse_run

    if path:
        return load_run(path)
    document = os.environ.get("SELFTAUGHT_RUN")
    if not document:
        raise SystemExit("selftaught stage: give --run FILE or set SELFTAUGHT_RUN")
    return parse_run(json.loads(document), source="SELFTAUGHT_RUN")


def _write_termination_message(reason: str, message: str, permanent: bool) -> None:
    """What the operator shows as the failure reason (Kubernetes caps it at 4 KiB)."""
    path = os.environ.get("SELFTAUGHT_TERMINATION_MESSAGE_PATH", "/dev/termination-log")
    text = json.dumps({"reason": reason, "message": message[:3500], "permanent": permanent})
    try:
        Path(path).write_text(text)
    except OSError:
        pass


def cmd_stage(args: argparse.Namespace) -> int:
    from selftaught.api.load import SpecError
    from selftaught.errors import EXIT_PERMANENT, EXIT_RETRYABLE, SelftaughtError
    from selftaught.stages import run_stage
    from selftaught.store import StoreError
    from selftaught.store.layout import StageRef

    log = logging.getLogger("selftaught.stage")
    try:
        run = _load_run(args.run)
        ref = StageRef(args.name, args.iteration or 0)
        shard = args.shard if args.shard is not None else os.environ.get("JOB_COMPLETION_INDEX")
        manifest = run_stage(run, ref, None if shard is None else [int(shard)])
    except SpecError as error:
        _write_termination_message("InvalidSpec", str(error), True)
        log.error("%s", error)
        return EXIT_PERMANENT
    except SelftaughtError as error:
        _write_termination_message(error.reason, str(error), error.permanent)
        log.error("%s: %s", error.reason, error)
        return EXIT_PERMANENT if error.permanent else EXIT_RETRYABLE
    except StoreError as error:
        _write_termination_message("StorageUnavailable", str(error), False)
        log.error("StorageUnavailable: %s", error)
        return EXIT_RETRYABLE
    except Exception as error:  # a bug or an engine crash: retry, with the message for the user
        _write_termination_message("StageFailed", f"{type(error).__name__}: {error}", False)
        log.exception("stage failed")
        return EXIT_RETRYABLE
    if manifest is not None:
        log.info("%s done: %s", ref.label, json.dumps(manifest.summary)[:2000])
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from selftaught.api.load import SpecError, load_run
    from selftaught.local import StageFailed, run_local

    try:
        run = load_run(args.file)
        run_local(run, log_dir=Path(args.logs) if args.logs else None)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StageFailed as error:
        print(f"error: run {error.stage.label} failed, reason {error.reason}: {error.message}", file=sys.stderr)
        return 1
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    from selftaught.api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    from selftaught.controller.main import run_operator

    return run_operator(namespaces=args.namespace, all_namespaces=args.all_namespaces)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from selftaught.dev.tiny_model import build_tiny_model, read_instructions

    output = Path(args.output)
    if (output / "config.json").is_file() and not args.force:
        print(f"tiny model: {output} already exists (use --force to rebuild)")
        return 0
    build_tiny_model(output, read_instructions(Path(args.instructions)), steps=args.steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selftaught", description=__doc__)
    parser.add_argument("--version", action="version", version=f"selftaught {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a whole SelfTaughtRun on this machine (the local default)")
    run.add_argument("file", help="a SelfTaughtRun manifest (YAML)")
    run.add_argument("--logs", help="folder for each stage's log (default: a temporary folder)")
    run.set_defaults(func=cmd_run)

    stage = sub.add_parser("stage", help="run one stage of a run (the command every Job runs)")
    stage.add_argument("name", choices=["categorize", "select", "pairs", "judge", "train", "evaluate"])
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

    dev = sub.add_parser("dev", help="developer tools").add_subparsers(dest="tool", required=True)
    tiny = dev.add_parser("tiny-model", help="build the tiny offline seed model of the quickstart")
    tiny.add_argument("output")
    tiny.add_argument("--instructions", default="examples/data/instructions.jsonl")
    tiny.add_argument("--steps", type=int, default=300)
    tiny.add_argument("--force", action="store_true")
    tiny.set_defaults(func=cmd_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=os.environ.get("SELFTAUGHT_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
