"""`build_model`'s phases: a phase added after the ones the tokenizer learned from leaves the
model of the earlier phases exactly as it was (the hard testbed's seed is the easy seed, then
more training), and a phase at a rate of its own trains at that rate."""

from selftaught.dev.tiny_model import build_model

EXAMPLES = [([{"role": "user", "content": f"What is {a} plus {b}?"}], f"It is {a + b}.") for a in range(5) for b in range(5)]
LATER = [([{"role": "user", "content": "Compare the sentences."}], "They differ entirely, said the zebra.")]


def _build(folder, then=(), **settings):
    build_model(folder, EXAMPLES, steps=3, then=list(then), hidden_size=64, log=lambda _: None, **settings)
    return (folder / "model.safetensors").read_bytes(), (folder / "tokenizer.json").read_text()


def test_a_phase_after_the_vocabulary_phases_leaves_the_earlier_model_as_it_was(tmp_path):
    alone = _build(tmp_path / "alone")
    then_nothing = _build(tmp_path / "then", then=[(LATER, 0, 1e-4)], vocabulary_phases=1)
    assert then_nothing == alone  # the same tokenizer and the same weights, byte for byte
    learned_later = _build(tmp_path / "vocabulary", then=[(LATER, 0)])
    assert learned_later[1] != alone[1]  # a tokenizer that also read the later text is another tokenizer


def test_a_phase_at_a_rate_of_its_own_changes_the_weights_by_that_rate(tmp_path):
    base = _build(tmp_path / "base")[0]
    slow = _build(tmp_path / "slow", then=[(LATER, 2, 1e-6)], vocabulary_phases=1)[0]
    fast = _build(tmp_path / "fast", then=[(LATER, 2, 1e-2)], vocabulary_phases=1)[0]
    assert base != slow != fast
    changed = lambda data: sum(x != y for x, y in zip(base, data, strict=True))  # noqa: E731
    assert changed(slow) < changed(fast)


def test_a_phase_with_words_of_its_own_makes_each_one_token_and_keeps_the_earlier_tokens(tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    wording = "\n### Please judge the sentence below, carefully and at length:\n"
    prompt = [{"role": "user", "content": wording + "What is 1 plus 2?"}]
    alone = _build(tmp_path / "alone")
    _build(tmp_path / "words", then=[([(prompt, "It is 3.")], 2, 1e-3, [wording])], vocabulary_phases=1)
    tokenizer, before = AutoTokenizer.from_pretrained(tmp_path / "words"), AutoTokenizer.from_pretrained(tmp_path / "alone")
    assert len(tokenizer) == len(before) + 1
    assert tokenizer.tokenize(wording) == [wording]  # the whole wording, one token
    plain = "What is 4 plus 4? It is 8."
    assert tokenizer(plain)["input_ids"] == before(plain)["input_ids"]  # the earlier text tokenizes as it did
    model = LlamaForCausalLM.from_pretrained(tmp_path / "words")
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert alone[0] != (tmp_path / "words" / "model.safetensors").read_bytes()  # the phase trained
