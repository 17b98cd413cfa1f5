"""Property-based: random and adversarial records are either read and rendered exactly, or
rejected with a message naming the file, line and field. Never a crash, never mangled."""

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dianjing.config import DataConfig
from dianjing.data.load import load_conversations
from dianjing.data.render import RenderStats, render_all
from dianjing.data.templates import choose_template
from dianjing.errors import DataError

N_CASES = 400

PIECES = ["", " ", "\r\n", "\n", "\t", "\x00", "🙂", "👨‍👩‍👧", "你好，世界", "點睛", "</s>", "<s>", "USER:", "AI:",
          "{{ x }}", "{% if %}", "\\", "\"", "\u200b", "\ufeff", "Ａ"]
text = st.one_of(st.text(max_size=30), st.lists(st.sampled_from(PIECES), max_size=5).map("".join))
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
value = st.recursive(scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3),
                     max_leaves=6)
role = st.one_of(st.sampled_from(["user", "assistant", "system", "human", "gpt", "model", "developer",
                                  "robot", "", "USER"]), scalar)
content = st.one_of(text, text, value,
                    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]), "text": text}),
                             max_size=2))


def maybe_drop(d: dict) -> st.SearchStrategy:
    return st.sets(st.sampled_from(sorted(d)), max_size=1).map(lambda gone: {k: v for k, v in d.items() if k not in gone})


nonempty = text.filter(lambda s: s.strip())
pairs = st.lists(st.tuples(nonempty, nonempty), min_size=1, max_size=3)
valid = st.one_of(
    pairs.map(lambda ps: {"messages": [m for u, a in ps for m in ({"role": "user", "content": u},
                                                                  {"role": "assistant", "content": a})]}),
    pairs.map(lambda ps: {"conversations": [m for u, a in ps for m in ({"from": "human", "value": u},
                                                                       {"from": "gpt", "value": a})]}),
    st.tuples(nonempty, text, nonempty).map(lambda t: {"instruction": t[0], "input": t[1], "output": t[2]}),
)
records = st.one_of(
    valid, valid,
    st.fixed_dictionaries({"instruction": st.one_of(text, value), "input": st.one_of(text, value),
                           "output": st.one_of(text, value)}).flatmap(maybe_drop),
    st.fixed_dictionaries({"conversations": st.lists(
        st.fixed_dictionaries({"from": role, "value": content}), max_size=5)}),
    st.fixed_dictionaries({"messages": st.one_of(st.lists(
        st.fixed_dictionaries({"role": role, "content": content}), max_size=5), value)}),
    st.fixed_dictionaries({"prompt": st.one_of(text, value), "completion": st.one_of(text, value)}),
    value,
)
mutation = st.sampled_from(["none", "bom", "crlf", "nul", "bad-utf8", "ascii"])


def _strings(obj) -> set[str]:
    if isinstance(obj, str):
        return {obj}
    if isinstance(obj, dict):
        return set().union(*(_strings(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_strings(v) for v in obj)) if obj else set()
    return {str(obj)} if isinstance(obj, (int, float)) and not isinstance(obj, bool) else set()


FORMATS = st.sampled_from(["auto", "alpaca", "sharegpt", "messages", "prompt_completion"])


def _check(folder, tok, rec, how: str, fmt: str) -> str:
    """Write `rec` (mutated by `how`) as a one-line file and read it as `fmt`: it is either rejected
    with the file and line, or read with its answers unchanged and rendered with exactly those answers
    supervised (or dropped and counted). Returns "rejected", "rendered" or "dropped"."""
    path = folder / "f.jsonl"
    line = json.dumps(rec, ensure_ascii=(how == "ascii")).encode("utf-8")
    corrupt = False
    if how == "bom":
        line = b"\xef\xbb\xbf" + line
    elif how == "crlf":
        line += b"\r"
    elif how == "nul":
        line, corrupt = line[:1] + b"\x00" + line[1:], True
    elif how == "bad-utf8":
        line, corrupt = line[:-1] + b"\xff" + line[-1:], True
    path.write_bytes(line + b"\n")
    cfg = DataConfig(files=[{"path": str(path), "format": fmt}], on_error="skip")
    try:
        convs, report = load_conversations(cfg, log=lambda *_: None)
    except DataError as e:  # nothing usable in the file: the error says where and why
        assert "no usable examples" in str(e)
        cfg_stop = DataConfig(files=[{"path": str(path), "format": fmt}])
        with pytest.raises(DataError) as why:
            load_conversations(cfg_stop, log=lambda *_: None)
        assert f"{path}:1" in str(why.value)
        return "rejected"
    assert not corrupt
    (conv,) = convs
    # the answers are the record's own strings, unchanged
    originals = _strings(rec)
    answers = [m.content for m in conv.messages if m.role == "assistant"]
    for a in answers:
        assert a in originals or _in_parts(a, rec)
    template, _ = choose_template("plain", tok)
    stats = RenderStats()
    rendered = render_all(convs, tok, template, max_length=10_000, stats=stats)
    if not rendered:
        assert sum(stats.dropped.values()) == 1 and stats.dropped
        return "dropped"
    (r,) = rendered
    runs, cur = [], []
    for t, m in zip(r.input_ids, r.mask):
        if m:
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    got = [tok.decode(x, clean_up_tokenization_spaces=False) for x in runs]
    want = [f" {m.content}</s>" for m in conv.messages if m.role == "assistant" and m.train]
    assert got == want
    return "rendered"


def _fuzz(tmp_path_factory, tok, n: int, **kw) -> Counter:
    """Run _check on `n` drawn cases (hypothesis settings in `kw`); the counts of what happened."""
    tried = Counter()

    @settings(max_examples=n, deadline=None, **kw)
    @given(rec=records, how=mutation, fmt=FORMATS)
    def one(rec, how, fmt):
        outcome = _check(tmp_path_factory.mktemp("fuzz"), tok, rec, how, fmt)
        tried["records"] += 1
        tried[outcome] += 1
        tried["accepted"] += outcome != "rejected"
        tried[f"{outcome}:{how}"] += 1

    one()
    return tried


def test_records_are_rendered_exactly_or_rejected_by_name(tmp_path_factory, tiny_tokenizer):
    tried = _fuzz(tmp_path_factory, tiny_tokenizer, N_CASES)
    print(f"\nfuzz: {dict(tried)}")
    # the property held on every case; and the cases were not all of one kind, or it would be vacuous
    assert tried["records"] >= N_CASES and tried["accepted"] > 20 and tried["rejected"] > 20


def _in_parts(answer: str, rec) -> bool:
    """A list-of-parts content is joined: its parts must be the record's strings."""
    return answer in {"".join(p.get("text", "") for p in v if isinstance(p, dict))
                      for v in _lists(rec)}


def _lists(obj):
    if isinstance(obj, list):
        yield obj
        for v in obj:
            yield from _lists(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _lists(v)


def test_cases_were_tried(tmp_path_factory, tiny_tokenizer):
    """The strategies reach every outcome: on a fixed (derandomized) draw, records are read and rendered,
    rejected by name, and dropped, and every mutation is tried; a corrupt line is never accepted."""
    n = N_CASES // 2
    tried = _fuzz(tmp_path_factory, tiny_tokenizer, n, derandomize=True, database=None)
    print(f"\nfuzz (derandomized): {dict(tried)}")
    assert tried["records"] >= n
    assert tried["rendered"] > 10 and tried["rejected"] > 10 and tried["dropped"] >= 1
    for how in ("none", "bom", "crlf", "nul", "bad-utf8", "ascii"):
        assert tried[f"rendered:{how}"] + tried[f"dropped:{how}"] + tried[f"rejected:{how}"] > 0, how
    assert tried["rendered:nul"] == tried["rendered:bad-utf8"] == 0


@pytest.mark.parametrize("payload, what", [
    (b"[" * 100_000 + b"]" * 100_000, "nested"),
    (b'{"prompt": "' + b"x" * 1_100_000 + b'", "completion": "y"}', "limit"),
    (b"\xff\xfe\x00\x00", "UTF-8"),
    (b'{"prompt": "a", "completion": "b"}\x00', "JSON"),
])
def test_adversarial_lines_are_rejected_with_file_and_line(tmp_path, payload, what, monkeypatch):
    from dianjing.data import readers

    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 1_000_000)
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"prompt": "ok", "completion": "fine"}\n' + payload + b"\n")
    with pytest.raises(DataError) as e:
        load_conversations(DataConfig(files=[str(p)]), log=lambda *_: None)
    assert f"{p}:2" in str(e.value) and what in str(e.value)
    convs, report = load_conversations(DataConfig(files=[str(p)], on_error="skip"), log=lambda *_: None)
    assert len(convs) == 1 and sum(report.skipped.values()) == 1


def test_one_megabyte_line_is_read_and_truncated(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    p = tmp_path / "big.jsonl"
    p.write_text(json.dumps({"prompt": "字" * 1_000_000, "completion": "short answer"}) + "\n", encoding="utf-8")
    convs, _ = load_conversations(DataConfig(files=[str(p)]), log=lambda *_: None)
    stats = RenderStats()
    template, _ = choose_template("plain", tok)
    assert render_all(convs, tok, template, max_length=64, stats=stats) == []
    assert stats.dropped == {"no supervised token left after truncation to max_length": 1}
