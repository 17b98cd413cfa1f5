"""BadRecords: stop raises the first bad record's DataError (file:line, field, how to skip);
skip counts it by reason and keeps the first few places; and the three kinds of reader (chat
formats, generalist task files, specialist files) all go through it."""

import json

import pytest

from dianjing.config import DataConfig
from dianjing.data import bad_records
from dianjing.data.bad_records import BadRecords, Tally, reason_of, where_of
from dianjing.data.load import load_conversations
from dianjing.data.specialist_readers import read_task
from dianjing.errors import DataError
from dianjing.generalist.mix import build_mixture, load_task_data
from dianjing.generalist.registry import load_mixture, load_registry


def _missing(line, field="output", file="d.jsonl"):
    return DataError("missing", file=file, line=line, field=field)


# -- the helper ---------------------------------------------------------------------------
def test_stop_raises_the_error_with_place_field_and_how_to_skip():
    bad = BadRecords("stop")
    with pytest.raises(DataError) as e:
        bad.handle(_missing(7))
    msg = str(e.value)
    assert msg.startswith("d.jsonl:7: field 'output': missing\n")
    assert msg.count("d.jsonl:7") == 1  # the place is named once, not repeated
    assert e.value.file == "d.jsonl" and e.value.line == 7 and e.value.field == "output"
    assert e.value.fix == "fix the record, or set data.on_error=skip to skip bad records (they are counted)"
    assert not bad.counts


def test_stop_keeps_the_errors_own_fix_and_names_the_callers_setting():
    bad = BadRecords("stop", skip_hint="set on_error: skip in the mixture")
    with pytest.raises(DataError) as e:
        bad.handle(DataError("cannot tell the format", file="d.jsonl record 3", fix="set the format"))
    assert str(e.value).startswith("d.jsonl record 3: cannot tell the format")
    assert e.value.fix == "set the format; or set on_error: skip in the mixture"


def test_skip_counts_by_reason_and_keeps_the_first_places():
    bad = BadRecords("skip")
    for line in (2, 3, 5, 8):
        bad.handle(_missing(line))
    bad.handle(DataError("not valid JSON: Expecting value at column 1", file="d.jsonl", line=4))
    assert bad.counts == {"field 'output': missing": 4, "not valid JSON: Expecting value at column 1": 1}
    assert bad.tally.examples["field 'output': missing"] == [
        "d.jsonl:2: field 'output': missing", "d.jsonl:3: field 'output': missing",
        "d.jsonl:5: field 'output': missing"]  # the first three of the reason
    assert bad.tally.places["field 'output': missing"] == ["d.jsonl:2", "d.jsonl:3", "d.jsonl:5"]
    assert bad.tally.first(4) == ["d.jsonl:2: field 'output': missing", "d.jsonl:3: field 'output': missing",
                                  "d.jsonl:5: field 'output': missing", "d.jsonl:4: not valid JSON: Expecting value "
                                  "at column 1"]
    assert bad.summary() == ("skipped 5 records: 4 × field 'output': missing; "
                             "1 × not valid JSON: Expecting value at column 1")


def test_skip_with_the_callers_reason_and_message():
    bad = BadRecords("skip")
    err = DataError("empty text: 'text' is blank", file="a.csv", line=3, field="text")
    bad.handle(err, reason="empty text", message="empty text: 'text' is blank")
    assert bad.counts == {"empty text": 1}
    assert bad.tally.examples == {"empty text": ["a.csv:3: empty text: 'text' is blank"]}


def test_reason_and_place_of_an_error():
    long = DataError("x" * 200 + "\nsecond line", file="f.json")
    assert where_of(long) == "f.json" and len(reason_of(long)) == bad_records.REASON_WIDTH
    assert reason_of(long).endswith("…") and "second" not in reason_of(long)
    assert where_of(DataError("m")) == "" and reason_of(DataError("m", field="a.b")) == "field 'a.b': m"


def test_summary_shows_the_top_reasons_and_says_when_there_are_more():
    t = Tally()
    for reason, n in (("a", 3), ("b", 2), ("c", 1), ("d", 1)):
        for _ in range(n):
            t.add(reason, "f:1")
    assert t.summary() == "skipped 7 records: 3 × a; 2 × b; 1 × c; …"
    one = Tally()
    one.add("only")
    assert one.summary() == "skipped 1 record: 1 × only" and one.examples == {"only": ["only"]}
    assert Tally().summary() == "skipped 0 records"


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="'stop' or 'skip'"):
        BadRecords("ignore")


# -- the three call sites -------------------------------------------------------------------
@pytest.fixture
def handled(monkeypatch):
    """Every error BadRecords.handle sees, so a test can show a reader used it."""
    seen = []
    real = BadRecords.handle

    def spy(self, err, **kw):
        seen.append((self.policy, str(err).splitlines()[0]))
        return real(self, err, **kw)

    monkeypatch.setattr(BadRecords, "handle", spy)
    return seen


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_alpaca_file_skips_and_counts_or_stops(tmp_path, handled):
    p = _write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "x"},
                                            {"instruction": "y"}, {"instruction": "c", "output": "d"}])
    convs, report = load_conversations(DataConfig(files=[{"path": str(p), "format": "alpaca"}], on_error="skip"),
                                       log=lambda *_: None)
    assert len(convs) == 2 and report.skipped == {"field 'output': missing": 2}
    assert report.first_errors == [f"{p}:2: field 'output': missing", f"{p}:3: field 'output': missing"]
    assert [policy for policy, _ in handled] == ["skip", "skip"]
    with pytest.raises(DataError) as e:
        load_conversations(DataConfig(files=[{"path": str(p), "format": "alpaca"}]), log=lambda *_: None)
    assert str(e.value).startswith(f"{p}:2: field 'output': missing") and "data.on_error=skip" in str(e.value)
    assert handled[-1] == ("stop", f"{p}:2: field 'output': missing")


def _registry(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"text": f"item {i}", "label": i % 2} for i in range(4)]
                 + [{"txt": "no text field", "label": 0}, ["not an object"]])
    (tmp_path / "reg.yaml").write_text(
        "tasks:\n  - name: a\n    source: a.jsonl\n    cluster: topic\n    fields: {text: text}\n"
        "    options: [\"no\", \"yes\"]\n    templates:\n"
        "      - {name: t0, input: \"T {{ text }}\", target: \"{{ options[label] }}\"}\n")
    (tmp_path / "mix.yaml").write_text("registries: [reg.yaml]\n")
    return load_registry(tmp_path / "reg.yaml")


def test_generalist_task_file_skips_and_counts_or_stops(tmp_path, handled):
    reg = _registry(tmp_path)
    src = tmp_path / "a.jsonl"
    td = load_task_data(reg.tasks[0], reg, None, "skip")
    assert len(td.records) == 4
    assert td.dropped == {"field 'text': missing (task 'a' maps template variable 'text' to it)": 1,
                          "expected an object, got list": 1}
    assert td.bad.tally.places["expected an object, got list"] == [f"{src}:6"]
    said = []
    report = build_mixture(load_mixture(tmp_path / "mix.yaml"), log=said.append).report["tasks"]["a"]
    assert report["dropped_records"] == dict(td.dropped) and report["records"] == 6
    assert f"a: skipped 2 records: 1 × field 'text': missing (task 'a' maps template variable 'text' to it); " \
           f"1 × expected an object, got list" in said
    with pytest.raises(DataError) as e:
        load_task_data(reg.tasks[0], reg, None, "stop")
    assert str(e.value).startswith(f"{src}:5: field 'text': missing") and "on_error: skip" in str(e.value)
    assert ("stop", f"{src}:5: field 'text': missing (task 'a' maps template variable 'text' to it)") in handled


def test_specialist_classify_file_skips_and_counts_or_stops(tmp_path, handled):
    p = tmp_path / "d.csv"
    p.write_text("text,label\nok,a\n  ,b\nfine,b\n,a\n", encoding="utf-8")
    exs, rep = read_task([str(p)], "classify", on_error="skip")
    assert [x.text for x in exs] == ["ok", "fine"] and rep.rejected == {"empty text": 2}
    assert rep.samples["empty text"] == [f"{p}:3: empty text: 'text' is blank", f"{p}:5: empty text: 'text' is blank"]
    assert [policy for policy, _ in handled] == ["skip", "skip"]
    with pytest.raises(DataError) as e:
        read_task([str(p)], "classify")
    assert str(e.value).startswith(f"{p}:3: field 'text': empty text: 'text' is blank")
    assert "give every record some text; or set data.on_error=skip" in str(e.value)
    assert handled[-1][0] == "stop"
