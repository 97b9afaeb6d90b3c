"""The contamination guard's reading (`method/contamination.py` is its rule): the evaluation set's
prompts, read exactly as the evaluate stage reads them, against the instructions. `select` drops
what matches (`data.decontaminate`); `selftaught plan` counts it before any model loads."""

from __future__ import annotations

from selftaught.api.spec import SelfTaughtRunSpec
from selftaught.method.contamination import EvaluationPrompts, Tally
from selftaught.stages.sources import iter_evaluation_examples, iter_instructions
from selftaught.store.jsonl import SkipCounter


def evaluation_prompts(spec: SelfTaughtRunSpec) -> EvaluationPrompts | None:
    """The evaluation source's prompts, indexed; None when there is nothing to guard: no source
    (the held-out pairs are the run's own instructions, de-duplicated by select, and split by
    pairs) or `data.decontaminate: off`."""
    if spec.data.decontaminate == "off" or not spec.data.evaluation.source:
        return None
    examples = iter_evaluation_examples(spec.data.evaluation, spec.evaluate.benchmark, spec.storage, SkipCounter())
    return EvaluationPrompts(example["prompt"] for example in examples)


def count_contaminated(spec: SelfTaughtRunSpec) -> Tally | None:
    """How many of the run's instructions match its evaluation set (None: nothing to guard)."""
    prompts = evaluation_prompts(spec)
    if prompts is None:
        return None
    tally = Tally()
    for record in iter_instructions(spec.data.instructions, spec.storage, SkipCounter()):
        tally.add(prompts.match(record["instruction"]), record["id"])
    return tally
