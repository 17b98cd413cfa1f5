"""Scoring a stage: each task's own metric, the best over its answers, prompts that do not fit counted."""

import json

import pytest
import torch

from dianjing.lifelong.evaluate import evaluate, score
from dianjing.lifelong.examples import Layout
from dianjing.lifelong.sequence import TaskSpec
from dianjing.lifelong.tasks import QAExample, TaskData


@pytest.mark.parametrize("metric, pred, answers, want", [
    ("accuracy", "Business", ["Business"], 1.0),
    ("accuracy", "business", ["Business"], 0.0),
    ("em", "the Eiffel Tower", ["Eiffel Tower", "tower"], 1.0),  # SQuAD normalisation drops the article
    ("f1", "Eiffel", ["Eiffel Tower", "Paris"], 2 / 3),
    ("f1", "台北市", ["台北"], 0.8),  # per character for Chinese
    ("rouge_l", "a b c", ["a c", "x"], 0.8),
])
def test_score_is_the_best_over_the_answers(metric, pred, answers, want):
    assert score(metric, pred, answers) == pytest.approx(want)


def test_evaluate_writes_scores_and_predictions_and_counts_what_does_not_fit(tiny_llama, make_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    tok = make_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()
    layout = Layout(tok, "__ans__", lambda t: f"__{t}__")
    spec = TaskSpec(name="t", files=["x"], format="qa", metric="accuracy", max_answer_tokens=3)
    data = TaskData(spec, train=[QAExample("t", "q", ["yes"])],
                    eval=[QAExample("t", "short?", ["yes"], "e:1"), QAExample("t", "long " * 40, ["no"], "e:2")])
    got = evaluate(model, tok, layout, [data], tmp_path, batch_size=4, max_length=32, log=lambda *_: None)
    assert got["t"]["n"] == 1 and got["t"]["too_long"] == 1 and got["t"]["majority_rate"] == 100.0
    assert json.loads((tmp_path / "eval.json").read_text()) == got
    rows = [json.loads(l) for l in (tmp_path / "eval" / "t.jsonl").read_text().splitlines()]
    assert rows[1]["prediction"] is None and rows[1]["score"] is None
    assert isinstance(rows[0]["prediction"], str) and got["t"]["score"] == 100.0 * rows[0]["score"]
