"""Pseudo-examples: how many, how they are sampled, parsed, filtered and counted, and the files kept."""

import json

import pytest
import torch

from dianjing.infer.generate import SamplingParams, generate_batch
from dianjing.lifelong import pseudo
from dianjing.lifelong.examples import Layout
from dianjing.lifelong.sequence import LamolSettings
from dianjing.lifelong.tasks import QAExample


@pytest.mark.parametrize("gamma, n, earlier, want", [
    (0.2, 100, ["a"], {"a": 20}),
    (0.2, 101, ["a", "b"], {"a": 11, "b": 10}),  # ⌈20.2⌉ = 21, the first task takes the remainder
    (0.2, 5, ["a", "b", "c"], {"a": 1, "b": 0, "c": 0}),
    (2.0, 8, ["a", "b"], {"a": 8, "b": 8}),
])
def test_replay_counts_are_ceil_gamma_n_shared_evenly(gamma, n, earlier, want):
    assert pseudo.replay_counts(gamma, n, earlier) == want


@pytest.mark.parametrize("text, want", [
    ("Stocks fell.\nWhat is it? __ans__ Business", ("Stocks fell.\nWhat is it?", "Business")),
    ("no marker here", pseudo.NO_MARKER),
    ("q __ans__ a __ans__ b", pseudo.MANY_MARKERS),
    ("  __ans__ a", pseudo.NO_QUESTION),
    ("q __ans__  ", pseudo.NO_ANSWER),
])
def test_parse_wants_exactly_one_question_and_one_answer(text, want):
    assert pseudo.parse(text, "__ans__") == want


@pytest.fixture(scope="module")
def layout(make_tokenizer):
    return Layout(make_tokenizer(), "__ans__", lambda task: f"__{task}__")


def test_generated_examples_are_parsed_filtered_and_counted(layout, monkeypatch):
    enc = layout.enc
    outputs = iter([(enc("a 1 __ans__ red"), True), (enc("a 2 red"), True), (enc("a 3 __ans__ red"), False),
                    (enc("x __ans__ y __ans__ z"), True), (enc("b 1 __ans__ green"), True),
                    (enc("b " * 60 + "__ans__ green"), True)])
    seen = {}

    def fake_sample(model, prompts, params, max_new, pad_id, eos, seeds=None):
        seen.setdefault("prompts", []).extend(prompts)
        seen["params"] = params
        return [next(outputs) for _ in prompts]

    monkeypatch.setattr(pseudo, "sample", fake_sample)
    tok = layout.tok
    records, report = pseudo.generate(torch.nn.Linear(1, 1), tok, layout, {"t1": 4, "t2": 2},
                                      LamolSettings(batch_size=4), max_length=48, seed=0, log=lambda *_: None)
    assert seen["prompts"] == [layout.gen_prompt("t1")] * 4 + [layout.gen_prompt("t2")] * 2
    assert (seen["params"].top_k, seen["params"].temperature, seen["params"].top_p) == (20, 1.0, 1.0)
    assert [r["reason"] for r in records] == [None, pseudo.NO_MARKER, pseudo.NO_END, pseudo.MANY_MARKERS, None,
                                              pseudo.TOO_LONG]
    assert (records[0]["prompt"], records[0]["answer"], records[0]["kept"]) == ("a 1", "red", True)
    assert report["requested"] == report["generated"] == 6 and report["kept"] == 2
    assert report["dropped"] == {pseudo.NO_MARKER: 1, pseudo.NO_END: 1, pseudo.MANY_MARKERS: 1, pseudo.TOO_LONG: 1}
    assert report["per_task"]["t2"] == {"requested": 2, "generated": 2, "kept": 1, "dropped": {pseudo.TOO_LONG: 1}}


def test_replay_files_round_trip_and_only_kept_examples_train(tmp_path):
    records = [{"task": "t1", "text": "a __ans__ b", "prompt": "a", "answer": "b", "kept": True, "reason": None},
               {"task": "t1", "text": "junk", "prompt": None, "answer": None, "kept": False,
                "reason": pseudo.NO_MARKER}]
    report = pseudo.summarize(records, {"t1": 2}, "pseudo")
    assert not pseudo.exists(tmp_path)
    pseudo.write(tmp_path, records, report)
    assert pseudo.exists(tmp_path) and not list(tmp_path.glob(".*.tmp"))
    examples, back = pseudo.read(tmp_path)
    assert back == report and [(e.task, e.prompt, e.answers) for e in examples] == [("t1", "a", ["b"])]
    assert [json.loads(l)["reason"] for l in (tmp_path / pseudo.REPLAY_JSONL).read_text().splitlines()] == \
        [None, pseudo.NO_MARKER]


def test_real_replay_draws_the_counts_without_replacement():
    pool = {"a": [QAExample("a", f"q{i}", [f"x{i}"], f"f:{i}") for i in range(10)],
            "b": [QAExample("b", "only", ["y"], "g:1")]}
    records, report = pseudo.draw_real(pool, {"a": 4, "b": 3}, seed=1)
    assert [r["task"] for r in records] == ["a"] * 4 + ["b"] * 3  # b has one example: drawn three times
    assert len({r["prompt"] for r in records if r["task"] == "a"}) == 4
    assert report["kind"] == "real" and report["per_task"]["b"] == {"requested": 3, "generated": 3, "kept": 3,
                                                                   "dropped": {}}
    assert pseudo.draw_real(pool, {"a": 4, "b": 3}, seed=1)[0] == records


def test_sample_stops_at_the_end_token_and_at_max_new(tiny_llama, make_tokenizer):
    from transformers import AutoModelForCausalLM

    tok = make_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()
    prompts = [tok("Who are you?", add_special_tokens=False)["input_ids"], tok("hi", add_special_tokens=False)["input_ids"]]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12)
    want = generate_batch(model, tok, prompts, greedy)
    got = pseudo.sample(model, prompts, greedy, [12, 12], tok.pad_token_id, {tok.eos_token_id})
    assert [tok.decode(ids, skip_special_tokens=True) for ids, _ in got] == want
    assert len(got[0][0]) >= 2
    short = pseudo.sample(model, prompts, greedy, [1, 0], tok.pad_token_id, {tok.eos_token_id})
    assert short[0] == (got[0][0][:1], False) and short[1] == ([], False)  # cut at max_new: not ended
    eos_first = {got[0][0][0]}  # the first greedy token counts as the end: nothing generated, ended
    assert pseudo.sample(model, prompts[:1], greedy, [12], tok.pad_token_id, eos_first)[0] == ([], True)
    hot = SamplingParams(temperature=1.0, top_p=1.0, top_k=20)
    a = pseudo.sample(model, prompts, hot, [8, 8], tok.pad_token_id, {tok.eos_token_id}, seeds=[1, 2])
    b = pseudo.sample(model, prompts[1:], hot, [8], tok.pad_token_id, {tok.eos_token_id}, seeds=[2])
    assert a[1] == b[0]  # a row's draws do not depend on the other rows
