"""Journal and ledger: what a kill leaves behind is cut back to the last commit, never half-kept."""

import json

import pytest

from dianjing.errors import DianjingError
from dianjing.teacher.store import Journal, Ledger


def test_commit_then_reopen(tmp_path):
    files = {"a": tmp_path / "a.jsonl", "out": tmp_path / "out" / "o.jsonl"}
    led = Ledger(tmp_path, files)
    led.commit("u1", {"a": [{"x": 1}, {"x": 2}], "out": [{"y": "一"}]})
    led.commit("u2", {"a": [], "out": [{"y": "二"}]})
    led.close()
    again = Ledger(tmp_path, files)
    assert again.done == {"u1", "u2"} and again.rows("a") == [{"x": 1}, {"x": 2}]
    assert [r["y"] for r in again.rows("out")] == ["一", "二"]


def test_uncommitted_lines_are_dropped_on_reopen(tmp_path):
    files = {"a": tmp_path / "a.jsonl", "b": tmp_path / "b.jsonl"}
    led = Ledger(tmp_path, files)
    led.commit("u1", {"a": [{"x": 1}], "b": [{"z": 1}]})
    led.close()
    # a kill after a unit wrote its lines (one of them half) but before its commit line
    with open(files["a"], "ab") as f:
        f.write(b'{"x": 2}\n{"x": 3')
    with open(files["b"], "ab") as f:
        f.write(b'{"z": 2}\n')
    with open(tmp_path / "commits.jsonl", "ab") as f:
        f.write(b'{"unit": "u2", "sizes": {"a": 99')  # the torn commit line itself
    notes = []
    again = Ledger(tmp_path, files, log=notes.append)
    assert again.done == {"u1"}
    assert again.rows("a") == [{"x": 1}] and again.rows("b") == [{"z": 1}]
    assert len(notes) == 2 and "dropping" in notes[0]
    again.commit("u2", {"a": [{"x": 2}]})
    assert [json.loads(line)["unit"] for line in (tmp_path / "commits.jsonl").read_text().splitlines()] == ["u1", "u2"]


def test_a_file_cut_short_outside_is_refused(tmp_path):
    files = {"out": tmp_path / "o.jsonl"}
    led = Ledger(tmp_path, files)
    led.commit("u1", {"out": [{"x": 1}]})
    led.close()
    files["out"].write_text("")
    with pytest.raises(DianjingError, match="changed or replaced outside dianjing"):
        Ledger(tmp_path, files)


def test_journal_keeps_replies_and_counts_failures_over_runs(tmp_path):
    p = tmp_path / "requests.jsonl"
    j = Journal(p)
    j.append({"kind": "failure", "key": "k#1", "cause": "HTTP 429"})
    j.append({"kind": "reply", "key": "k#1", "response": {"choices": []}})
    j.close()
    with open(p, "ab") as f:
        f.write(b'{"kind": "reply", "key": "k#2", "resp')  # killed while writing
    j = Journal(p)
    assert j.reply("k#1") and j.reply("k#2") is None and j.failures == {"HTTP 429": 1}
    j.append({"kind": "gave_up", "key": "k#3"})
    j.close()
    assert all(json.loads(line) for line in p.read_text().splitlines()) and Journal(p).gave_up == 1
