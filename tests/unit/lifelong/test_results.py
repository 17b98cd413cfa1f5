"""The accuracy matrix's figures: average, forgetting, backward transfer; the table and the plot."""

import json

from dianjing.lifelong import results

TASKS = ["a", "b", "c"]
METRICS = {"a": "accuracy", "b": "f1", "c": "rouge_l"}
MATRIX = [[90.0, None, None],
          [60.0, 80.0, None],
          [70.0, 50.0, 40.0]]


def test_average_forgetting_and_bwt():
    res = results.compute("lamol", TASKS, ["1: a", "2: b", "3: c"], MATRIX, METRICS, {"a": 55.0, "b": None, "c": None})
    assert res["final"] == {"a": 70.0, "b": 50.0, "c": 40.0}
    assert res["average"] == 53.3333
    assert res["forgetting"] == {"a": 20.0, "b": 30.0}  # best earlier score minus the final one
    assert res["average_forgetting"] == 25.0
    assert res["bwt"] == -25.0  # ((70 - 90) + (50 - 80)) / 2


def test_multitask_has_one_row_and_no_forgetting():
    res = results.compute("multitask", TASKS, ["all (multitask)"], [[70.0, 60.0, 50.0]], METRICS,
                          {t: None for t in TASKS})
    assert res["average"] == 60.0 and res["forgetting"] is None and res["bwt"] is None


def test_table_json_and_png_are_written(tmp_path):
    res = results.compute("sequential", TASKS, ["1: a", "2: b", "3: c"], MATRIX, METRICS,
                          {"a": 55.0, "b": None, "c": None})
    text = results.table(res)
    assert "| after | a (accuracy) | b (f1) | c (rouge_l) |" in text
    assert "| 2: b | 60.0 | 80.0 | – |" in text and "| majority class | 55.0 |  |  |" in text
    assert "| forgetting | 20.0 | 30.0 |  |" in text and "backward transfer (BWT): -25.00" in text
    results.write(tmp_path, res, log=lambda *_: None)
    assert json.loads((tmp_path / "results.json").read_text())["bwt"] == -25.0
    assert (tmp_path / "results.md").read_text().strip() == text
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
