"""Generation: text pieces and stop strings, per-row sampling, and the batched KV-cache functions
(left-padded prefill, merge, select, trim) giving the same greedy tokens as one prompt at a time."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dianjing.infer.generate import (KVBatch, SamplingParams, TextStream, can_rearrange, decode_step,
                                     generate_batch, merge, prefill, sample_rows, select, stream, trim)


class PieceTokenizer:
    """Token id i decodes to PIECES[i]; a lone "\\xff" stands for half a UTF-8 character."""

    PIECES = ["Hel", "lo", " US", "ER:", " wor", "ld", "\xff", "é", "</s>"]

    def decode(self, ids, skip_special_tokens=True):
        text = "".join(self.PIECES[i] for i in ids if not (skip_special_tokens and self.PIECES[i] == "</s>"))
        return text.replace("\xffé", "é").replace("\xff", "\ufffd")


def _pieces(ids, stops=()):
    ts = TextStream(PieceTokenizer(), stops)
    out = []
    for i in ids:
        out.append(ts.push(i))
        if ts.stopped:
            break
    out.append(ts.finish())
    return [p for p in out if p], ts.stopped


def test_text_stream_without_stops_yields_everything():
    assert _pieces([0, 1, 4, 5]) == (["Hel", "lo", " wor", "ld"], False)


def test_text_stream_cuts_at_a_stop_string_split_over_tokens():
    pieces, stopped = _pieces([0, 1, 2, 3, 4], stops=["\n", " USER:"])
    assert "".join(pieces) == "Hello" and stopped


def test_text_stream_holds_back_only_what_may_start_a_stop():
    pieces, stopped = _pieces([0, 1, 4, 5], stops=[" USER:"])
    assert "".join(pieces) == "Hello world" and not stopped


def test_text_stream_waits_for_a_whole_character():
    ts = TextStream(PieceTokenizer())
    assert ts.push(0) == "Hel" and ts.push(6) == "" and ts.push(7) == "é"


def test_sample_rows_per_row_params():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    greedy = SamplingParams(temperature=0)
    assert sample_rows(logits, [greedy, greedy], [None, None]) == [1, 0]
    hot = SamplingParams(temperature=1.0, top_p=1.0)
    draws = [sample_rows(logits, [greedy, hot], [None, torch.Generator().manual_seed(s)])[1] for s in range(30)]
    assert set(draws) > {0}  # the hot row samples
    again = [sample_rows(logits, [greedy, hot], [None, torch.Generator().manual_seed(s)])[1] for s in range(30)]
    assert draws == again  # and a seeded generator repeats
    narrow = SamplingParams(temperature=1.0, top_p=0.01)
    assert sample_rows(logits, [narrow, narrow], [None, None]) == [1, 0]


@pytest.mark.parametrize("first_k", [1024, 2])  # the nucleus found among the first k, or by a full sort
def test_sampling_follows_the_distribution(monkeypatch, first_k):
    from dianjing.infer import generate

    monkeypatch.setattr(generate, "TOP_P_FIRST_K", first_k)
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    gen = torch.Generator().manual_seed(0)
    cases = [(1.0, [0.05, 0.5, 0.15, 0.3]), (0.7, [0, 0.625, 0, 0.375]),  # 0.7: the two likeliest
             (0.9, [0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95])]  # 0.9: all but the least likely
    for top_p, want in cases:
        counts = torch.zeros(4)
        for _ in range(4000):
            counts[generate._sample(logits, SamplingParams(temperature=1.0, top_p=top_p), gen)] += 1
        assert torch.allclose(counts / 4000, torch.tensor(want), atol=0.03), (top_p, counts / 4000)


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_gemma"])
def lm(request):
    path = request.getfixturevalue(request.param)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(path))


PROMPTS = ["USER: What is the capital of France? AI:", "hi",
           "The quick brown fox jumps over the lazy dog. 1 + 2 = 3. Who are you? I am"]


def _greedy_alone(model, ids, steps):
    return model.generate(torch.tensor([ids]), max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                          pad_token_id=0)[0, len(ids):].tolist()


def test_generate_batch_equals_stream(lm):
    model, tok = lm
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    params = SamplingParams(max_new_tokens=30, temperature=0, stop=["fox"])
    assert generate_batch(model, tok, prompts, params) == ["".join(stream(model, tok, ids, params)) for ids in prompts]


def test_rows_join_and_leave_a_running_batch(lm):
    """Two prompts start, a longer third joins after 5 steps and leaves after 10: every row's greedy
    tokens equal generating it alone (the gemma model's 16-token sliding window is crossed on the way)."""
    model, tok = lm
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    got = [[] for _ in prompts]
    batch, logits = prefill(model, prompts[:2], tok.pad_token_id)
    live = [0, 1]
    for step in range(40):
        nxt = logits.argmax(-1).tolist()
        for i, t in zip(live, nxt):
            got[i].append(t)
        if step == 5:
            joined, first = prefill(model, prompts[2:], tok.pad_token_id)
            batch = merge(batch, joined)
            live.append(2)
            nxt.append(int(first[0].argmax()))
            got[2].append(nxt[-1])
        if step == 10:
            batch = select(batch, [0, 1])
            live, nxt = [0, 1], nxt[:2]
        logits = decode_step(model, batch, nxt)
    # the padding the long row needed is gone: as many columns as the longest remaining row
    assert batch.rows == 2 and batch.length == len(prompts[0]) + 40
    for i, ids in enumerate(prompts):
        assert got[i] == _greedy_alone(model, ids, len(got[i])), i


def test_trim_cuts_only_all_padding_columns(lm):
    model, tok = lm
    prompts = [tok(p)["input_ids"] for p in PROMPTS[:2]]
    batch, _ = prefill(model, prompts, tok.pad_token_id)
    assert trim(batch) is batch  # the longest row starts at column 0
    short = select(batch, [1])
    assert short.length == len(prompts[1]) and short.mask.all()


def test_other_caches_are_refused():
    assert not can_rearrange(object())
    with pytest.raises(TypeError, match="cannot rearrange"):
        select(KVBatch(object(), torch.ones(2, 3, dtype=torch.long)), [0])


def test_a_tiny_temperature_samples_the_likeliest_token():
    """logits / 1e-300 overflows: the softmax used to be NaN and the draw always the last token."""
    from dianjing.infer.generate import _sample

    gen = torch.Generator().manual_seed(0)
    for seed in range(20):
        logits = torch.randn(50, generator=torch.Generator().manual_seed(seed)) * 5
        for top_p, t in ((1.0, 1e-300), (0.9, 1e-300), (1.0, 1e-5), (0.9, 1e-5)):  # 1e-5: the shifted softmax
            p = SamplingParams(temperature=t, top_p=top_p)
            assert _sample(logits, p, gen) == int(logits.argmax())
            assert _sample(logits.bfloat16(), p, gen) == int(logits.bfloat16().argmax())


def test_answer_start_drops_only_the_leading_whitespace():
    from dianjing.infer.generate import AnswerStart

    start = AnswerStart()
    assert [start(p) for p in (" ", "\n", " Hi", " there", " ")] == ["", "", "Hi", " there", " "]


def test_top_k_samples_among_the_k_likeliest_only():
    from dianjing.infer import generate

    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    for _ in range(3000):
        counts[generate._sample(logits, SamplingParams(temperature=1.0, top_p=1.0, top_k=2), gen)] += 1
    want = torch.softmax(logits[:2], 0)
    assert counts[2:].sum() == 0 and torch.allclose(counts[:2] / 3000, want, atol=0.03)
    # top-p within the top k, over their renormalised mass; top_k 0 (the default) changes nothing
    for _ in range(200):
        assert generate._sample(logits, SamplingParams(temperature=1.0, top_p=0.5, top_k=3), gen) == 0
    assert SamplingParams().top_k == 0


def test_the_templates_end_of_turn_token_ends_generation(make_tokenizer):
    """A model folder whose EOS is </s> but whose template ends turns with <|im_end|> (an added special
    token, dropped from the decoded text) must stop there: the token training supervised."""
    from dianjing.data.templates import choose_template
    from dianjing.infer.generate import eos_ids, turn_end_ids

    tok = make_tokenizer(specials=("<|im_start|>", "<|im_end|>"))
    chatml, _ = choose_template("chatml", tok)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert turn_end_ids(tok, chatml) == {end}
    assert end in eos_ids(None, tok, chatml) and end not in eos_ids(None, tok)
    plain, _ = choose_template("plain", tok)  # ends its turns with the tokenizer's own EOS
    assert turn_end_ids(tok, plain) == {tok.eos_token_id}
