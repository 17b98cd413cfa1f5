"""Held-out scoring: ROUGE-L, option log-likelihoods from one shared KV cache (equal to a plain
forward pass), greedy generation, and the per-template / per-cluster summaries."""

import pytest
import torch

from dianjing.eval.text import tokenize
from dianjing.generalist.score import aggregate, answer_prefix, group_scores, option_logprobs, rouge_l
from dianjing.generalist.templates import Example


def test_rouge_l():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS("police killed the gunman", "the gunman was killed by police") = "the gunman" → 2
    p, r = 2 / 4, 2 / 6
    assert rouge_l("police killed the gunman", "the gunman was killed by police") == pytest.approx(2 * p * r / (p + r))
    assert rouge_l("", "x") == 0.0 and rouge_l("", "") == 1.0 and rouge_l("A B", "c d") == 0.0
    assert tokenize("市區兩車相撞, OK 2 cars") == ["市", "區", "兩", "車", "相", "撞", "ok", "2", "cars"]
    assert rouge_l("市區兩車相撞", "兩車相撞，無人受傷") == pytest.approx(2 * (4 / 6) * (4 / 8) / (4 / 6 + 4 / 8))


def test_rouge_l_matches_rouge_score_on_english():
    rs = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rs.RougeScorer(["rougeL"], use_stemmer=False)
    pairs = [("The council approved a new bridge.", "The city council voted to build a new bridge over the river."),
             ("floods closed roads and schools", "Overnight floods closed roads and schools in several villages."),
             ("a b c d e", "e d c b a"), ("2 cars crashed", "Two cars crashed, 2 people hurt")]
    for pred, ref in pairs:
        assert rouge_l(pred, ref) == pytest.approx(scorer.score(ref, pred)["rougeL"].fmeasure)


def test_answer_prefix_of_builtin_templates():
    from dianjing.data.templates import BUILTIN_TEMPLATES, ChatTemplate

    plain = ChatTemplate("plain", BUILTIN_TEMPLATES["plain"], "<s>", "</s>", True)
    chatml = ChatTemplate("chatml", BUILTIN_TEMPLATES["chatml"], None, "<|im_end|>", False)
    assert answer_prefix(plain) == " " and answer_prefix(chatml) == ""


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gemma"])  # gemma: sliding-window layers (window 16)
def test_option_logprobs_equal_a_full_forward(which, request):
    from dianjing.infer.generate import SamplingParams, generate_batch, prefill
    from dianjing.infer.load import load_run
    from dianjing.generalist.score import greedy

    model, tok, _ = load_run(request.getfixturevalue(which), precision="fp32", log=lambda *_: None)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompts = [enc("USER: What is the capital of France? The quick brown fox jumps over the lazy dog\nAI:"),
               enc("USER: hi\nAI:")]
    conts = [[enc(" Paris is"), enc(" hello world 你好"), enc(" a")], [enc(" The number is")]]
    batch, last = prefill(model, prompts, tok.pad_token_id)
    got = option_logprobs(model, batch, last, conts, tok.pad_token_id, max_rows=2)
    for i, p in enumerate(prompts):
        for j, c in enumerate(conts[i]):
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].float(), -1)
            want = [float(lp[len(p) - 1 + k, c[k]]) for k in range(len(c))]
            assert got[i][j] == pytest.approx(want, abs=1e-4)
    # the batch was not consumed: greedy generation from it equals dianjing's batched generation
    ref = generate_batch(model, tok, prompts, SamplingParams(max_new_tokens=6, temperature=0))
    assert greedy(model, tok, batch, last, 6, ()) == [r.strip() for r in ref]


def _ex(target, options=None, refs=None, template="t1"):
    return Example("p", target, "task", "ds", "c", template, options=options, references=refs or [target])


def test_group_scores_and_spread():
    opts = ["no", "yes"]
    g1 = {"cluster": "c", "dataset": "ds", "task": "task", "template": "t1", "metric": "accuracy",
          "examples": [_ex("yes", opts), _ex("no", opts), _ex("yes", opts), _ex("yes", opts)]}
    preds = [{"option": "yes", "option_norm": "no", "generated": "Yes."}, {"option": "yes", "option_norm": "no",
             "generated": "no"}, {"option": "yes", "option_norm": "yes", "generated": "maybe"},
             {"option": "no", "option_norm": "yes", "generated": "yes"}]
    r1 = group_scores(g1, preds)
    assert r1["accuracy"] == 0.5 and r1["accuracy_norm"] == 0.75 and r1["exact_match"] == 0.75
    assert r1["majority"] == 0.75 and r1["chance"] == 0.5 and r1["primary"] == "accuracy"
    g2 = {**g1, "template": "t2", "examples": g1["examples"][:2]}
    r2 = group_scores(g2, [{"option": "yes"}, {"option": "no"}])
    assert r2["accuracy"] == 1.0 and "exact_match" not in r2
    gen = {"cluster": "s", "dataset": "news", "task": "n", "template": "t", "metric": "rouge_l",
           "examples": [_ex("the cat sat")]}
    r3 = group_scores(gen, [{"generated": "the cat"}])
    assert r3["rouge_l"] == pytest.approx(0.8) and r3["primary"] == "rouge_l" and "accuracy" not in r3
    datasets, clusters = aggregate([r1, r2, r3])
    acc = datasets["ds"]["accuracy"]
    assert acc["mean"] == 0.75 and acc["min"] == 0.5 and acc["max"] == 1.0 and acc["std"] == 0.25
    assert acc["templates"] == 2 and clusters["c"]["accuracy"]["mean"] == 0.75
    assert clusters["s"]["rouge_l"]["mean"] == pytest.approx(0.8) and clusters["c"]["n"] == 6
