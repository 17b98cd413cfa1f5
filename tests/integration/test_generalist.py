"""Generalist route end to end on a tiny random model: mix → train → held-out eval, from the CLI."""

from __future__ import annotations

import json

import pytest

from dianjing.cli import main
from dianjing.train.loop import train
from tests.helpers import SHARED_DATA, sft_config

REAL_T0 = SHARED_DATA / "multitask" / "t0"


def test_mix_train_and_score_held_out(tiny_llama, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "toy.jsonl"
    assert main(["mix", "builtin:toy-mixture", "--out", str(data)]) == 0
    report = json.loads((tmp_path / "toy.jsonl.report.json").read_text())
    assert report["held_out"] == {"sentiment": ["movie_sentiment", "product_sentiment"]}
    rows = [json.loads(l) for l in data.read_text().splitlines()]
    assert len(rows) == report["total"] == 56 and not {r["cluster"] for r in rows} & {"sentiment"}

    cfg = sft_config(tiny_llama, data, tmp_path / "run", "train.max_steps=3", "train.batch_size=8", "train.threads=1",
                     "data.eval_fraction=0", "model.gradient_checkpointing=false", "data.max_length=256",
                     "train.warmup_ratio=0", base=())
    run_dir, summary = train(cfg, log=lambda *_: None)
    assert summary["steps"] == 3 and summary["data"]["examples"] == 56  # the file reads as training data

    capsys.readouterr()
    assert main(["eval", str(run_dir), "--mixture", "builtin:toy-mixture", "--held-out", "--per-task", "6"]) == 0
    out = capsys.readouterr().out
    assert "held-out cluster 'sentiment'" in out and "spread over templates" in out
    res = json.loads((run_dir / "eval" / "heldout-toy-mixture.json").read_text())
    assert {(r["dataset"], r["template"]) for r in res["rows"]} == {
        ("movie_reviews", "how_feel"), ("movie_reviews", "question_first"), ("movie_reviews", "good_bad"),
        ("product_reviews", "tone"), ("product_reviews", "would_buy")}  # the turned-around one is not scored
    for r in res["rows"]:
        assert r["n"] == 6 and 0 <= r["accuracy"] <= 1 and 0 <= r["exact_match"] <= 1 and r["primary"] == "accuracy"
        assert len(r["samples"][0]["option_logprobs"]) == 2
    sent = res["clusters"]["sentiment"]
    assert sent["n"] == 30 and sent["accuracy"]["templates"] == 5
    assert sent["accuracy"]["min"] <= sent["accuracy"]["mean"] <= sent["accuracy"]["max"]

    # the base model row: a bare model folder, results in ./eval (never inside the model folder)
    assert main(["eval", str(tiny_llama), "--mixture", "builtin:toy-mixture", "--held-out", "--per-task", "3",
                 "--no-generate"]) == 0
    base = json.loads((tmp_path / "eval" / "heldout-toy-mixture-llama.json").read_text())
    assert base["examples"] == 15 and "exact_match" not in base["rows"][0]


def test_generative_clusters_are_scored(tiny_llama):
    from dianjing.generalist.registry import load_mixture
    from dianjing.generalist.score import evaluate_heldout
    from dianjing.infer.load import load_run

    mix = load_mixture("builtin:toy-mixture", ["held_out=[summarisation, extractive_qa, closed_book_qa]"])
    model, tok, chat = load_run(tiny_llama, precision="fp32", log=lambda *_: None)
    res = evaluate_heldout(model, tok, chat, mix, per_task=3, max_new_tokens=4, log=lambda *_: None)
    by = {(r["cluster"], r["template"]): r for r in res["rows"]}
    assert set(by) == {("summarisation", "summarize"), ("summarisation", "tldr"), ("extractive_qa", "context_question"),
                       ("extractive_qa", "question_context"), ("closed_book_qa", "answer"), ("closed_book_qa", "quiz")}
    assert "rouge_l" in by[("summarisation", "tldr")] and "f1" in by[("extractive_qa", "context_question")]
    assert by[("closed_book_qa", "quiz")]["primary"] == "exact_match" and "accuracy" not in by[("closed_book_qa", "quiz")]
    assert set(res["clusters"]) == {"summarisation", "extractive_qa", "closed_book_qa"}


def test_cli_errors(tiny_llama, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(tiny_llama), "--held-out"]) == 2
    assert "--mixture and --held-out go together" in capsys.readouterr().err
    assert main(["eval", str(tiny_llama)]) == 2
    assert "--data FILE" in capsys.readouterr().err
    # a leak is refused with the task and dataset named
    (tmp_path / "m.yaml").write_text("registries: [builtin:toy-registry]\nheld_out: [sentiment]\n"
                                     "include: {clusters: [topic], tasks: [product_sentiment]}\n")
    assert main(["mix", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "product_sentiment" in err and "product_reviews" in err and "held-out" in err
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.skipif(not REAL_T0.is_dir(), reason="the shared T0 data is not on this machine")
def test_t0_held_out_sentiment_scores(tiny_llama, monkeypatch):
    from dianjing.generalist.registry import load_mixture
    from dianjing.generalist.score import evaluate_heldout
    from dianjing.infer.load import load_run

    monkeypatch.setenv("DIANJING_T0_DIR", str(REAL_T0))
    mix = load_mixture("builtin:t0-sentiment-heldout", ["eval.templates_per_dataset=1"])
    model, tok, chat = load_run(tiny_llama, precision="fp32", log=lambda *_: None)
    res = evaluate_heldout(model, tok, chat, mix, per_task=2, generate=False, max_prompt_tokens=120,
                           log=lambda *_: None)
    assert set(res["datasets"]) == {"amazon_polarity", "app_reviews", "imdb", "rotten_tomatoes", "yelp_review_full"}
    assert all(r["n"] == 2 and "accuracy" in r for r in res["rows"]) and res["prompts_cut"] > 0
