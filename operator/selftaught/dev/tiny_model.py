"""A tiny seed model for the quickstart and the tests, built in seconds, offline.

Random weights never write `[[A]]` or a category line, so the pipeline would have nothing to
select, pair or keep. This builds a 2-layer Llama with its own byte-level BPE tokenizer and chat
template, then briefly fine-tunes it to *speak the formats* of every stage: the category answer,
a response, the modified-instruction markers and a judgment ending in a verdict. Its verdicts
are right about 70% of the time by construction. It proves the plumbing, not judge quality.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from selftaught.method.prompts import (
    MODIFIED_ANSWER_END,
    MODIFIED_ANSWER_START,
    MODIFIED_QUESTION_MARKER,
    categorize_messages,
    judge_messages,
    modified_instruction_messages,
    rating_messages,
    response_messages,
)

CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
SPECIAL = ["<s>", "</s>", "<pad>"]


def _category(instruction: str) -> tuple[str, int]:
    """A learnable rule: most quickstart instructions land in the reasoning categories."""
    first = instruction.split()[0].lower()
    if any(ch.isdigit() for ch in instruction) or first in {"solve", "prove", "how"}:
        return "Mathematical reasoning", 7
    if first in {"write", "pretend", "rewrite", "give"}:
        return "Creative Writing", 3
    if first in {"summarize", "classify", "extract"}:
        return "Extraction", 2
    return "Knowledge and Reasoning", 6


def _short(text: str, words: int) -> str:
    return " ".join(text.rstrip("?.!").split()[:words])


def synthetic_conversations(instructions: list[str], seed: int = 0) -> list[tuple[list[dict], str]]:
    """(prompt messages, target answer) pairs in each stage's format."""
    rng = random.Random(seed)
    examples = []
    for index, instruction in enumerate(instructions):
        category, complexity = _category(instruction)
        chosen = f"The answer: {_short(instruction, 6)} because of the main reason."
        modified = f"Describe the history of {_short(instruction, 4).lower()}"
        rejected = f"Historically, {_short(instruction, 4).lower()} was studied long ago."
        examples += stage_examples(instruction, f"Category: {category}\nComplexity: {complexity}\nLength: (b)", chosen, modified, rejected)
        for chosen_first in (True, False):
            a, b = (chosen, rejected) if chosen_first else (rejected, chosen)
            right = "A" if chosen_first else "B"
            verdict = right if rng.random() < 0.7 else ("B" if right == "A" else "A")
            examples.append((judge_messages(instruction, a, b), f"Assistant {verdict} answers the question asked. [[{verdict}]]"))
        # a pointwise judge's format (judge.format: pointwise): rate one answer 1-10, the rating last;
        # right about which answer is better 70 % of the time, like its pairwise verdicts. One
        # instruction in three: the rating prompt is long, and the other formats keep their share
        if index % 3:
            continue
        right = rng.random() < 0.7
        high, low = rng.randint(6, 9), rng.randint(2, 5)
        for answer, rating in ((chosen, high if right else low), (rejected, low if right else high)):
            kind = "answers the question asked" if rating > 5 else "answers another question"
            examples.append((rating_messages(instruction, answer), f"The response {kind}. {rating}"))
    return examples


def stage_examples(instruction: str, category: str, chosen: str, modified: str, rejected: str) -> list[tuple[list[dict], str]]:
    """What a seed answers for one instruction in the categorize and pairs stages: its category
    line, its answer, and a modified instruction with the answer to that."""
    return [
        (categorize_messages(instruction), category),
        (response_messages(instruction), chosen),
        (
            modified_instruction_messages(instruction, chosen),
            f"{MODIFIED_QUESTION_MARKER}\n{modified}\n\n{MODIFIED_ANSWER_START}\n{rejected}\n{MODIFIED_ANSWER_END}",
        ),
    ]


def build_tiny_model(output: Path, instructions: list[str], *, steps: int = 400, seed: int = 0, log=print) -> Path:
    """Write an HF checkpoint (safetensors, tokenizer, chat template) to `output`."""
    return build_model(output, synthetic_conversations(instructions, seed), steps=steps, seed=seed, log=log)


def build_model(
    output: Path,
    examples: list[tuple[list[dict], str]],
    *,
    steps: int,
    seed: int = 0,
    hidden_size: int = 128,
    layers: int = 2,
    learning_rate: float = 3e-3,
    batch_size: int = 8,
    isolate: str | None = None,
    then: list[tuple] = (),  # type: ignore[assignment]
    vocabulary_phases: int | None = None,
    name: str = "tiny model",
    log=print,
) -> Path:
    """Train a byte-level BPE and a small Llama on `examples` ((prompt messages, answer) pairs,
    the loss on the answer only) and write an HF checkpoint that vLLM and the train stage load.

    With `isolate` (a regular expression), what it matches stays a token of its own and the rest
    of the text may merge *across* words: a prompt's fixed wording then shrinks to a few tokens,
    which a 2-layer model needs to attend to the few that matter (a 250-token prompt drowns them:
    measured, it learns nothing in 2,000 steps where a 46-token one learns in 250). `then` is
    more training after the first `steps`: (examples, steps) phases, in order, or (examples, steps,
    learning rate) for a phase at a rate of its own, with fresh optimizer moments. The tokenizer
    learns from every phase's text, or from the first `vocabulary_phases` alone: phases added
    after those then leave the model of the earlier ones exactly as it was without them. A
    fourth element, (examples, steps, rate, words), makes each of `words` (a prompt's fixed
    wording) one new token from that phase on: the model's embeddings grow by as many rows and
    the tokenizer keeps its merges, so what the earlier phases trained stays as it was."""
    import torch
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    started = time.monotonic()
    torch.manual_seed(seed)
    schedule = [(examples, steps, learning_rate, ()), *(_phase(phase, learning_rate) for phase in then)]
    phases = [[(_render(messages), target + "</s>") for messages, target in phase] for phase, *_ in schedule]
    tokenizer_corpus = [text for phase in phases[:vocabulary_phases] for pair in phase for text in pair]

    bpe = Tokenizer(models.BPE())
    if isolate is None:
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        bpe.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(isolate), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        tokenizer_corpus,
        trainers.BpeTrainer(
            vocab_size=2048 if isolate is None else 4096, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="left")
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL}

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,  # heads of 64: vLLM rejects head_dim 16
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=hidden_size // 64,
        num_key_value_heads=hidden_size // 64,
        max_position_embeddings=2048,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    rng = random.Random(seed)
    model.train()
    for number, (phase, (_, phase_steps, phase_rate, words)) in enumerate(zip(phases, schedule, strict=True)):
        if words:  # new tokens: new rows of the embeddings, hence new parameters for the optimizer
            tokenizer.add_tokens([AddedToken(word, normalized=False) for word in words])
            _grow_vocabulary(model, len(tokenizer))
        if phase_rate != learning_rate or words:  # a phase at a rate of its own starts from fresh optimizer moments
            optimizer = torch.optim.AdamW(model.parameters(), lr=phase_rate)
        batches = [_encode(tokenizer, prompt, target) for prompt, target in phase]
        for step in range(phase_steps):
            batch = rng.sample(batches, k=min(batch_size, len(batches)))
            input_ids, labels = _pad(batch, ids["<pad>"])
            loss = model(input_ids=input_ids, attention_mask=(input_ids != ids["<pad>"]).long(), labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step % 100 == 0 or step == phase_steps - 1:
                log(f"{name}: {f'phase {number + 1}, ' if then else ''}step {step + 1}/{phase_steps} loss {loss.item():.3f}")

    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    GenerationConfig(bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"]).save_pretrained(output)
    for path in output.iterdir():
        path.chmod(0o644)
    log(f"{name}: saved to {output} in {time.monotonic() - started:.1f}s")
    return output


def _grow_vocabulary(model, size: int) -> None:
    """New rows for new tokens in the input embeddings and the output layer, each the mean of the
    old rows: new modules, so autograd and the optimizer see new parameters (transformers'
    `resize_token_embeddings` swaps a trained leaf's data, which autograd then refuses)."""
    import torch

    old_in, old_out = model.get_input_embeddings().weight.data, model.get_output_embeddings().weight.data
    grown_in = torch.nn.Embedding(size, old_in.shape[1], padding_idx=model.get_input_embeddings().padding_idx)
    grown_out = torch.nn.Linear(old_out.shape[1], size, bias=False)
    with torch.no_grad():
        for grown, old in ((grown_in.weight, old_in), (grown_out.weight, old_out)):
            grown[: old.shape[0]] = old
            grown[old.shape[0] :] = old.mean(dim=0)
    model.set_input_embeddings(grown_in)
    model.set_output_embeddings(grown_out)
    model.config.vocab_size = size


def _phase(phase: tuple, learning_rate: float) -> tuple:
    """(examples, steps[, rate[, words]]) with the defaults filled in."""
    examples, steps, *rest = phase
    rate = rest[0] if rest else learning_rate
    return examples, steps, rate, tuple(rest[1]) if len(rest) > 1 else ()


def _render(messages: list[dict]) -> str:
    text = "".join(f"<s>{m['role']}\n{m['content']}</s>" for m in messages)
    return text + "<s>assistant\n"


def _encode(tokenizer, prompt: str, target: str) -> tuple[list[int], list[int]]:
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def _pad(batch, pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    for row, (ids, target) in enumerate(batch):
        # right padding: positions then start at 0, as they do for each request in vLLM
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(target)
    return input_ids, labels


def read_instructions(path: Path) -> list[str]:
    return [json.loads(line)["instruction"] for line in path.read_text().splitlines() if line.strip()]
