"""Score a finished stage on every task seen so far, each with its own metric (eval/metrics.py).

The model answers each held-out prompt (`BOS P M`) greedily; the answer is the text up to the end
token, stripped. A prompt that does not fit in max_length is left out of the score and counted
(`too_long` in eval.json), the same ones after every stage. Scores are percentages: accuracy and EM/F1 (the best over a question's answers,
SQuAD's normalisation, Chinese-aware) and ROUGE-L. The predictions are written beside the scores
(`eval/<task>.jsonl` in the stage folder), so a person can read what the model answered.
"""

from __future__ import annotations

import json
from pathlib import Path

from dianjing.eval.metrics import qa_exact, qa_f1, rouge_l
from dianjing.infer.generate import SamplingParams, eos_ids
from dianjing.lifelong.examples import Layout
from dianjing.lifelong.pseudo import sample
from dianjing.lifelong.tasks import TaskData

EVAL_JSON = "eval.json"


def score(metric: str, pred: str, answers: list[str]) -> float:
    """One prediction's score in [0, 1]: the best over the gold answers."""
    match metric:
        case "accuracy":
            return float(pred == answers[0])
        case "em":
            return max(qa_exact(pred, a) for a in answers)
        case "f1":
            return max(qa_f1(pred, a) for a in answers)
        case "rouge_l":
            return max(rouge_l(pred, a) for a in answers)
    raise ValueError(f"unknown metric {metric!r}")  # the sequence schema allows only the four above


def answer_budget(data: TaskData, layout: Layout) -> int:
    """Tokens generated per answer: the task's max_answer_tokens, else its longest training answer + 8."""
    if data.spec.max_answer_tokens:
        return data.spec.max_answer_tokens
    return max(len(layout.answer(e.answer)) for e in data.train) + 8


def predict(model, tokenizer, layout: Layout, data: TaskData, batch_size: int,
            max_length: int) -> list[str | None]:
    """Greedy answers to the task's held-out prompts; None for a prompt that leaves no room in max_length."""
    budget = answer_budget(data, layout)
    eos, pad = eos_ids(model, tokenizer) | {layout.eos}, tokenizer.pad_token_id
    greedy = SamplingParams(temperature=0.0)
    out: list[str | None] = []
    for s in range(0, len(data.eval), batch_size):
        prompts = [layout.prompt_ids(e.prompt) for e in data.eval[s:s + batch_size]]
        fit = [i for i, p in enumerate(prompts) if len(p) < max_length]
        got = dict(zip(fit, sample(model, [prompts[i] for i in fit], greedy,
                                   [min(budget, max_length - len(prompts[i])) for i in fit], pad, eos))) if fit else {}
        out += [tokenizer.decode(got[i][0], skip_special_tokens=True).strip() if i in got else None
                for i in range(len(prompts))]
    return out


def evaluate(model, tokenizer, layout: Layout, tasks: list[TaskData], stage_dir: Path, batch_size: int,
             max_length: int, log=print) -> dict:
    """{task: {metric, score, n, majority_rate}} for the stage, written to eval.json and eval/<task>.jsonl."""
    (stage_dir / "eval").mkdir(parents=True, exist_ok=True)
    scores = {}
    for data in tasks:
        preds = predict(model, tokenizer, layout, data, batch_size, max_length)
        rows = [{"where": e.where, "answers": e.answers, "prediction": p,
                 "score": None if p is None else score(data.spec.metric, p, e.answers)}
                for e, p in zip(data.eval, preds)]
        (stage_dir / "eval" / f"{data.name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        per = [r["score"] for r in rows if r["score"] is not None]
        too_long = len(rows) - len(per)
        scores[data.name] = {"metric": data.spec.metric, "score": round(100.0 * sum(per) / max(1, len(per)), 4),
                             "n": len(per), "too_long": too_long,
                             "majority_rate": data.majority_rate([e for e, r in zip(data.eval, rows)
                                                                  if r["score"] is not None])}
        maj = scores[data.name]["majority_rate"]
        log(f"  {data.name}: {data.spec.metric} {scores[data.name]['score']:.2f}"
            + (f" (majority class {maj:.1f})" if maj is not None else "") + f" on {len(per)} held-out examples"
            + (f" ({too_long} left out: the prompt does not fit in max_length {max_length})" if too_long else ""))
    tmp = stage_dir / f".{EVAL_JSON}.tmp"
    tmp.write_text(json.dumps(scores, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(stage_dir / EVAL_JSON)
    return scores
