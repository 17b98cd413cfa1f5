"""`dianjing eval RUN --data FILE` on a tiny chat run and its bare base model, end to end from the CLI:
the JSON and the JSONL of generations written where they belong, the metric detected and said, option
accuracy, perplexity of the references (lower after training on the same pattern), and batched answers
equal to one-at-a-time generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dianjing.cli import main
from tests.helpers import sft_config, write_alpaca


@pytest.fixture(scope="module")
def run_and_base(tmp_path_factory):
    from dianjing.train.loop import train
    from tests.tiny import build_model

    root = tmp_path_factory.mktemp("eval-chat")
    base = build_model(root / "base")
    data = write_alpaca(root / "train.jsonl", n=24)
    run, _ = train(sft_config(base, data, root / "run", "train.max_steps=30", "model.precision=fp32",
                              "data.eval_fraction=0"), log=lambda *_: None)
    return run, base


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_eval_writes_scores_and_every_generation(run_and_base, tmp_path, capsys, monkeypatch):
    run, base = run_and_base
    monkeypatch.chdir(tmp_path)
    data = write_alpaca(tmp_path / "numbers.jsonl", n=6)
    assert main(["eval", str(run), "--data", str(data), "--precision", "fp32", "--batch-size", "4"]) == 0
    captured = capsys.readouterr()
    assert "metric f1 (auto: references are short" in captured.err and "numbers.jsonl" in captured.out
    res = json.loads((run / "eval" / "numbers.json").read_text(encoding="utf-8"))
    assert res["kind"] == "run" and res["template"] == "plain" and res["metric"] == "f1"
    assert res["scores"]["n"] == 6 and res["data_report"]["records"] == 6
    for k in ("exact_match", "f1", "contains", "rouge_l", "perplexity", "nll"):
        assert k in res["scores"], k
    assert res["generation"]["temperature"] == 0.0 and res["generation"]["max_new_tokens"] > 0
    rows = _rows(run / "eval" / "numbers.jsonl")
    assert len(rows) == 6 and res["generations"] == str(run / "eval" / "numbers.jsonl")
    assert rows[0]["prompt"] == [{"role": "user", "content": "Say the number 0."}]
    assert rows[0]["reference"] == "The number is 0." and isinstance(rows[0]["answer"], str)
    assert set(rows[0]["scores"]) >= {"exact_match", "f1", "contains", "rouge_l", "nll"}

    # the baseline row: the bare model, written to ./eval, never into the model folder
    assert main(["eval", str(base), "--data", str(data), "--precision", "fp32", "--metric", "perplexity"]) == 0
    base_res = json.loads((tmp_path / "eval" / "numbers-base.json").read_text(encoding="utf-8"))
    assert base_res["kind"] == "model" and base_res["metric"] == "perplexity"
    assert all(r["answer"] is None for r in _rows(tmp_path / "eval" / "numbers-base.jsonl"))  # no generation
    assert not (base / "eval").exists()
    # training on this pattern made the references likelier
    assert res["scores"]["perplexity"] < base_res["scores"]["perplexity"]


def test_options_and_question_sets(run_and_base, tmp_path, capsys):
    run, _ = run_and_base
    mc = write_jsonl(tmp_path / "mc.jsonl", [
        {"instruction": f"Say the number {i}.", "output": f"The number is {i}.",
         "options": [f"The number is {i}.", f"The number is {i + 1}."], "category": "numbers"} for i in range(4)])
    out = tmp_path / "scores"
    assert main(["eval", str(run), "--data", str(mc), "builtin:questions", "--precision", "fp32",
                 "--max-new-tokens", "4", "--out", str(out)]) == 0
    mc_res = json.loads((out / "mc.json").read_text(encoding="utf-8"))
    assert mc_res["metric"] == "accuracy" and 0 <= mc_res["scores"]["accuracy"] <= 100
    assert mc_res["by_category"]["numbers"]["n"] == 4
    assert all(len(r["scores"]["option_logprobs"]) == 2 for r in _rows(out / "mc.jsonl"))
    q = json.loads((out / "questions.json").read_text(encoding="utf-8"))
    assert q["format"] == "mt-bench" and q["scores"]["n"] == 59  # 80 questions, 59 with a reference
    assert q["data_report"]["notes"] == {"turns without a reference answer: not scored (dianjing judge grades "
                                         "them)": 23}
    assert set(q["by_category"]) == {"knowledge", "rewriting", "translation", "reasoning", "maths", "coding",
                                     "identity"}


def test_batched_answers_equal_one_at_a_time_generation(run_and_base):
    from dianjing.eval.runner import Job, Settings, run_jobs
    from dianjing.infer.generate import SamplingParams, complete
    from dianjing.infer.load import load_run

    run, _ = run_and_base
    model, tok, chat = load_run(run, precision="fp32", log=lambda *_: None)
    prompts = [[{"role": "user", "content": t}] for t in
               ("Say the number 3.", "Who are you?", "Translate to English: 你好，世界", "hi")]
    got = run_jobs(model, tok, chat, [Job(p) for p in prompts], Settings(max_new_tokens=8, batch_size=4))
    want = [complete(model, tok, chat, p, SamplingParams(max_new_tokens=8, temperature=0)).strip() for p in prompts]
    assert [r.answer for r in got] == want
