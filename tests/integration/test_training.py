"""The train stage's data path on the tiny model: examples laid end to end (padding-free or packed)
train exactly what they would alone, and too-long examples are dropped, never cut."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _records(n: int, words: int = 5) -> list[dict]:
    return [
        {
            "messages": [{"role": "user", "content": f"Which answer is better? pair {i} " + "word " * (words + i)}],
            "completion": f"Assistant A is better for reason {i}. [[A]]",
        }
        for i in range(n)
    ]


def test_examples_laid_end_to_end_do_not_attend_to_each_other(tiny_model):
    """What TRL's padding-free collator hands the model (one row, position ids restarting per
    example, no attention mask) gives every example the same logits it gets alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    texts = ["a short one", "a somewhat longer example of a judge prompt", "three"]
    examples = [{"input_ids": tokenizer(text)["input_ids"]} for text in texts]
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(examples)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    with torch.no_grad():  # no KV cache, as in training (TRL's compute_loss sets use_cache=False):
        # with one, transformers does not look for packed sequences in the position ids
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for example in examples:
            ids = torch.tensor([example["input_ids"]])
            alone = model(input_ids=ids).logits[0]
            torch.testing.assert_close(packed[start : start + ids.shape[1]], alone, rtol=1e-4, atol=1e-4)
            start += ids.shape[1]


def test_too_long_examples_are_dropped_and_counted_with_the_templates_own_length(tiny_model):
    from transformers import AutoTokenizer

    from selftaught.engines.training import fitting_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    records = _records(4, words=3) + _records(1, words=400)
    fitting = fitting_examples(records, tokenizer, max_seq_len=200)
    assert (len(fitting.rows), fitting.too_long) == (4, 1)
    row = fitting.rows[0]
    assert row["completion"] == [{"role": "assistant", "content": records[0]["completion"]}]
    full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)["input_ids"]
    assert fitting.longest <= 200 and fitting.tokens >= 4 * len(full)


def test_the_loss_is_on_the_judgment_only(tiny_model):
    """TRL's labels for our rows: the prompt (and the chat template around it) is masked, the
    judgment and the template's end of turn are learned."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from selftaught.engines.training import fitting_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    fitting = fitting_examples(_records(2), tokenizer, max_seq_len=512)
    args = SFTConfig(output_dir="/tmp/unused", completion_only_loss=True, padding_free=True, max_length=None, use_cpu=True, report_to=[], bf16=False)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args, train_dataset=Dataset.from_list(fitting.rows), processing_class=tokenizer)
    row = trainer.train_dataset[0]
    learned = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100])
    assert learned.startswith("Assistant A is better for reason 0. [[A]]")
    assert "Which answer" not in learned


def test_the_trainers_loss_on_a_packed_batch_is_the_loss_of_its_examples_alone(tiny_model):
    """Through TRL's own path (collator, compute_loss, fused LM head): the loss of examples laid
    end to end is the token-weighted mean of their losses alone."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from selftaught.engines.training import fitting_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    fitting = fitting_examples(_records(3), tokenizer, max_seq_len=512)
    args = SFTConfig(output_dir="/tmp/unused", completion_only_loss=True, padding_free=True, max_length=None, use_cpu=True, report_to=[], bf16=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(fitting.rows), processing_class=tokenizer)
    rows = [trainer.train_dataset[i] for i in range(3)]
    model.eval()
    with torch.no_grad():
        packed = trainer.compute_loss(trainer.model, trainer.data_collator(rows)).item()
        alone, weights = [], []
        for row in rows:
            alone.append(trainer.compute_loss(trainer.model, trainer.data_collator([row])).item())
            weights.append(sum(1 for label in row["labels"][1:] if label != -100))  # predicted tokens
    expected = sum(a * w for a, w in zip(alone, weights, strict=True)) / sum(weights)
    assert packed == pytest.approx(expected, rel=1e-4)


DPO_SCRIPT = """
import json, os, sys
from pathlib import Path
import torch
from selftaught.api.spec import Train
from selftaught.engines.training import train_dpo
from transformers import AutoModelForCausalLM, AutoTokenizer

model_path, out = Path(sys.argv[1]), Path(sys.argv[2])
records = [{"messages": [{"role": "user", "content": f"Which is better, pair {i}?"}],
            "chosen": f"Both read alike; the first is right. [[A]]", "rejected": f"Both read alike; the second is right. [[B]]"}
           for i in range(16)]

def margin(path):
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    def logp(text):
        prompt = tokenizer.apply_chat_template(records[0]["messages"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(records[0]["messages"] + [{"role": "assistant", "content": text}], tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([full])).logits[0, :-1].log_softmax(-1)
        return sum(logits[i, full[i + 1]].item() for i in range(len(prompt) - 1, len(full) - 1))
    return logp(records[0]["chosen"]) - logp(records[0]["rejected"])

train = Train(method="dpo", dpo={"beta": 0.1, "nllWeight": 0.2}, zeroStage=2, learningRate=5e-4, warmupSteps=0, epochs=2,
              microBatchSize=2, gradientAccumulation=2, bf16=False)
before = margin(model_path)
numbers = train_dpo(model_path=model_path, records=records, train=train, output_dir=out / "checkpoint", work_dir=out / "work")
print("RESULT " + json.dumps({"before": before, "after": margin(out / "checkpoint"), **numbers}))
"""


def test_dpo_on_judgment_pairs_moves_the_judge_toward_the_correct_verdict(tiny_model, tmp_path):
    """TRL's DPOTrainer, the reference model being the model trained from: after training, the
    correct judgment is likelier than the wrong one by more than before, and a checkpoint exists."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", DPO_SCRIPT, str(tiny_model), str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    assert result["pairs"] == 16 and result["too_long"] == 0 and result["steps"] == 8
    assert result["after"] > result["before"] + 1.0
    assert (tmp_path / "checkpoint" / "model.safetensors").exists() and (tmp_path / "checkpoint" / "tokenizer.json").exists()
