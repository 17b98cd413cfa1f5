"""dianjing report: the page holds the SVG curves, the cost and eval tables with the runs' numbers, the
judge and lifelong results, the generations side by side, and escapes every text; missing parts are said."""

import json
import re
from html import escape

import pytest

from dianjing.cli import main
from dianjing.errors import DianjingError
from dianjing.eval.report import build_report, line_chart, read_run, write_report

PROMPTS = ["<script>alert(1)</script> What is 2+2?", "台灣最高的山是哪座？", "Name a colour."]


def make_run(root, name, *, steps=5, answers=("4", "玉山", "blue"), loss0=2.0, evals=True):
    """A finished chat run folder with `steps` logged steps, two held-out evals and an eval json/jsonl pair."""
    r = root / name
    (r / "eval").mkdir(parents=True)
    lines = []
    for s in range(1, steps + 1):
        lines.append({"step": s, "epoch": s / steps, "loss": round(loss0 / s, 4), "lr": 1e-4 * (1 - s / (steps + 1)),
                      "grad_norm": 1.0 + s / 10, "tokens": 100 * s, "supervised_tokens": 40 * s,
                      "tokens_per_s": 500.0 + s, "elapsed_s": float(s)})
        if s in (2, steps):
            lines.append({"step": s, "eval_loss": round(loss0 / s + 0.1, 4), "elapsed_s": float(s)})
    (r / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (r / "summary.json").write_text(json.dumps({"steps": steps, "tokens": 100 * steps, "wall_time_s": 12.5,
                                                "device": "cuda", "device_name": "NVIDIA H200", "mfu": 0.41,
                                                "peak_device_memory_mb": 1234.5}))
    (r / "run.json").write_text(json.dumps({"base_model": "Qwen/Qwen2.5-0.5B", "model_name": "qwen2.5-0.5b",
                                            "method": "lora", "dtype": "bfloat16"}))
    (r / "template.json").write_text("{}")
    (r / "config.yaml").write_text("train:\n  lr: 0.0001  # <b>bold?</b>\n")
    if evals:
        rows = [{"id": str(i), "prompt": [{"role": "user", "content": p}], "reference": ref, "answer": a,
                 "scores": {"f1": 1.0}} for i, (p, ref, a) in enumerate(zip(PROMPTS, ("4", "玉山", "red"), answers))]
        (r / "eval" / "qa.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
        (r / "eval" / "qa.json").write_text(json.dumps({
            "run": str(r), "data": "qa.jsonl", "metric": "f1", "generations": str(r / "eval" / "qa.jsonl"),
            "scores": {"n": 3, "exact_match": 66.67, "f1": 71.25, "perplexity": 3.5},
            "by_category": {"geo": {"n": 1, "exact_match": 100.0, "f1": 100.0}}}, ensure_ascii=False))
    return r


def test_curves_are_polylines_with_a_point_per_step(tmp_path):
    run = make_run(tmp_path, "a", steps=7)
    page = build_report([read_run(run)])
    loss = re.search(r'<figure data-metric="loss">(.*?)</figure>', page).group(1)
    (points,) = re.findall(r'<polyline[^>]*points="([^"]+)"', loss)
    assert len(points.split()) == 7
    ev = re.search(r'<figure data-metric="eval_loss">(.*?)</figure>', page).group(1)
    assert len(re.search(r'points="([^"]+)"', ev).group(1).split()) == 2
    for key in ("lr", "grad_norm", "tokens_per_s"):
        assert f'data-metric="{key}"' in page
    assert "<script" not in page.replace("&lt;script", "")  # no JavaScript on the page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing to load


def test_two_runs_share_a_chart_and_sit_side_by_side(tmp_path):
    a = make_run(tmp_path, "run-a", answers=("4", "玉山", "blue"))
    b = make_run(tmp_path, "run-b", answers=("five", "雪山", "green"), loss0=3.0)
    out = write_report([str(a), str(b)], tmp_path / "r" / "report.html")
    page = out.read_text(encoding="utf-8")
    loss = re.search(r'<figure data-metric="loss">(.*?)</figure>', page).group(1)
    assert re.findall(r'data-label="([^"]+)"', loss) == ["run-a", "run-b"]
    gen = page[page.index("Example generations"):]
    assert "<th>run-a</th><th>run-b</th>" in gen
    row = gen[gen.index("台灣最高的山是哪座？"):]
    row = row[:row.index("</tr>")]
    assert row.index("玉山") < row.index("雪山")  # the reference, run-a's answer, run-b's answer
    assert "green" in gen and "five" in gen


def test_tables_hold_the_numbers(tmp_path):
    page = build_report([read_run(make_run(tmp_path, "a"))])
    cost = page[page.index("Cost:"):page.index("<h2>Evaluation")]
    for text in ("NVIDIA H200", "12.5", "0.41", "1234.5", ">500<"):
        assert text in cost, text
    ev = page[page.index("<h2>Evaluation"):]
    for text in ("qa.jsonl", "66.67", "71.25", "3.5", "geo", ">100<"):
        assert text in ev, text
    assert "qwen2.5-0.5b" in page and "lora" in page


def test_text_is_escaped(tmp_path):
    page = build_report([read_run(make_run(tmp_path, "a"))], title="<i>mine</i>")
    assert "<script>" not in page
    assert escape("<script>alert(1)</script> What is 2+2?") in page
    assert "<b>bold?</b>" not in page and "&lt;b&gt;bold?&lt;/b&gt;" in page
    assert "<i>mine</i>" not in page and "&lt;i&gt;mine&lt;/i&gt;" in page


def test_a_folder_without_metrics_is_reported_not_a_crash(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    full = make_run(tmp_path, "full")
    page = build_report([read_run(empty), read_run(full)])
    assert "no metrics.jsonl" in page and "no summary.json" in page
    assert "not a dianjing run folder" in page
    assert 'data-metric="loss"' in page  # the other run is still plotted
    only = build_report([read_run(empty)])
    assert "no metrics to plot" in only and "no run has a summary.json" in only and "no generations" in only


def test_damaged_metrics_lines_are_counted(tmp_path):
    run = make_run(tmp_path, "a", steps=3, evals=False)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 0.')
    rep = read_run(run)
    assert len([m for m in rep["metrics"] if "loss" in m]) == 3
    assert any("1 unreadable lines" in n for n in rep["notes"])


def test_judge_and_lifelong_results(tmp_path):
    run = make_run(tmp_path, "a")
    j = tmp_path / "judge-out"
    j.mkdir()
    (j / "result.json").write_text(json.dumps({
        "mode": "pairwise", "sides": {"a": {"source": str(run)}, "b": {"source": "reference"}},
        "judge": {"model": "judge-<x>"}, "warnings": [],
        "results": {"n": 10, "wins": 6, "ties": 1, "losses": 3, "win_rate": 0.65, "ci": [0.4, 0.85],
                    "agreement": 0.8, "unjudged": 0, "by_category": {"writing": {"n": 4, "wins": 3, "ties": 0,
                                                                                 "losses": 1, "win_rate": 0.75}}}}))
    (run / "results.json").write_text(json.dumps({
        "strategy": "replay", "tasks": ["t1", "t2"], "rows": ["after t1", "after t2"],
        "matrix": [[80.0, None], [70.0, 90.0]], "metrics": {"t1": "accuracy", "t2": "f1"},
        "average": 80.0, "average_forgetting": 10.0, "bwt": -10.0}))
    page = build_report([read_run(run)], [read_run_judge(j)])
    js = page[page.index("Judge results"):]
    assert "0.65" in js and "writing" in js and "judge-&lt;x&gt;" in js
    ll = page[page.index("Continual learning"):]
    for text in ("t1 (accuracy)", "after t2", "80.0", "90.0", "–", "-10.0"):
        assert text in ll, text


def read_run_judge(folder):
    from dianjing.eval.report import read_judge

    return read_judge(folder, [])


def test_judge_results_under_the_run_are_found_once(tmp_path):
    run = make_run(tmp_path, "a")
    j = run / "eval" / "judge-single-q"
    j.mkdir()
    (j / "result.json").write_text(json.dumps({"mode": "single", "results": {"a": {"n": 5, "mean": 7.25}}}))
    page = build_report([read_run(run)], [read_run_judge(j)])
    assert page.count("7.25") == 1


def test_line_chart_handles_one_point_and_nothing():
    svg = line_chart([("x", [(1, 0.5)])], "one")
    assert 'points="' in svg and svg.count("<circle") == 1
    assert line_chart([("x", [])], "none") == ""
    assert line_chart([("x", [(1, float("nan"))])], "nan") == ""


def test_cli_writes_the_page_and_errors_say_what_to_do(tmp_path, capsys):
    run = make_run(tmp_path, "a")
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out), "--examples", "1"]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    gen = page[page.index("Example generations"):]
    assert gen.count("<tr>") == 2  # the header and one example
    assert main(["report", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "fix:" in capsys.readouterr().err
    with pytest.raises(DianjingError, match="no result.json"):
        write_report([str(run)], out, judge=[str(tmp_path)])
