"""Read the data of the specialist tasks (classify, pair, tag, extract-qa) into examples.

Every record that cannot be used is either an error naming its file, line (or record) and
field (on_error="stop"), or is counted by reason in a ReadReport (on_error="skip"). Every
repair made by a stated rule (an I- tag that starts an entity becomes B-, an answer offset
that misses its text is moved to the nearest occurrence, ...) is always applied and always
counted in report.fixed, never made silently.

Formats:
  classify, pair  CSV/TSV with a header, JSON list, JSONL, Parquet (read by data.readers)
  tag             CoNLL-style columns (token first, tag last, a blank line between sentences)
                  in any file that is not .json/.jsonl/.ndjson/.csv/.parquet; or records with
                  "tokens"/"words" and "tags"/"ner_tags"/"labels" (lists of strings)
  extract-qa      SQuAD v1.1 JSON, or records in the Hugging Face "squad" layout
                  {id, question, context, answers: {"text": [...], "answer_start": [...]}}
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dianjing.data.readers import BUILTIN_PREFIX, RawRecord, _decode, _loads, read_records, resolve_path
from dianjing.errors import DataError

TASKS = ("classify", "pair", "tag", "extract-qa")
TEXT_FIELDS = ("text", "sentence", "content", "review", "document", "title")
LABEL_FIELDS = ("label", "labels", "category", "class", "sentiment", "target")
PAIR_FIELDS = (("text_a", "text_b"), ("sentence1", "sentence2"), ("premise", "hypothesis"),
               ("question1", "question2"), ("question", "sentence"), ("text", "text_pair"))
TOKEN_FIELDS = ("tokens", "words")
TAG_FIELDS = ("tags", "ner_tags", "labels")
RECORD_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".parquet")  # tag: anything else is CoNLL columns
MAX_SAMPLES = 3

# rejection reasons
EMPTY_TEXT = "empty text"
TEXT_NOT_TEXT = "text is not a string"
MISSING_LABEL = "missing label"
LABEL_NOT_SINGLE = "label is not a single value"
NOT_OBJECT = "record is not an object"
UNREADABLE = "unreadable line"
NO_TAG = "token without a tag"
NOT_UTF8 = "not valid UTF-8"
LENGTH_MISMATCH = "tokens and tags differ in length"
NOT_BIO = "tag not in BIO form"
EMPTY_SENTENCE = "empty sentence"
TOKENS_NOT_LIST = "tokens are not a list of strings"
TAGS_NOT_LIST = "tags are not a list of strings"
MISSING_TAGS = "missing tags"
EMPTY_QUESTION = "empty question"
EMPTY_CONTEXT = "empty context"
NO_ANSWER = "no answer (unanswerable questions are not supported)"
NOT_FOUND = "answer text not found in context"
BAD_ANSWERS = "answers not in SQuAD form"
BAD_SQUAD = "not a SQuAD entry"
# repairs
FIX_LABEL_SPACE = "label had surrounding whitespace: stripped"
FIX_BIO = "I- tag without a B- before it: became B-"
FIX_OFFSET = "answer offset did not match the context: moved to the nearest occurrence of the answer text"
FIX_DROP_NOT_FOUND = "answer text not found in context: answer dropped"
FIX_DROP_EMPTY = "empty answer text: answer dropped"
FIX_ID = "missing id: used <file>#<index>"
FIX_DUP_ID = "duplicate id: renamed <id>#<n>"

_BIO = re.compile(r"O|[BI]-.+", re.S)
_COLUMNS = re.compile(r"[ \t]+")
_INT = re.compile(r"-?\d+")


@dataclass
class TextExample:
    """classify (text_b None) and pair."""
    where: str              # "file:line" / "file record N"
    text: str
    text_b: str | None = None
    label: str | None = None


@dataclass
class TagExample:
    where: str              # file and line of the sentence's first token / its record
    tokens: list[str]
    tags: list[str] | None = None


@dataclass
class QAExample:
    where: str
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # (text, char start in context); empty only when labels are not required


@dataclass
class ReadReport:
    files: list[str] = field(default_factory=list)
    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    fixed: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)   # reason -> first "where: detail"
    _places: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    def note(self, counter: Counter, reason: str, where: str, message: str) -> None:
        counter[reason] += 1
        shown = self.samples.setdefault(reason, [])
        if len(shown) < MAX_SAMPLES:
            shown.append(f"{where}: {message}")
            self._places.setdefault(reason, []).append(where)

    def summary(self) -> dict:
        return {"files": list(self.files), "kept": self.kept,
                "rejected": dict(self.rejected.most_common()), "fixed": dict(self.fixed.most_common()),
                "samples": {k: list(v) for k, v in self.samples.items()}}

    def lines(self) -> list[str]:
        out = [f"read {self.kept} example{'s' if self.kept != 1 else ''} from "
               + ", ".join(self.files)]
        for kind, counter in (("rejected", self.rejected), ("fixed", self.fixed)):
            for reason, n in counter.most_common():
                places = self._places.get(reason, [])
                more = ", …" if n > len(places) else ""
                out.append(f"{kind} {n}: {reason} ({', '.join(places)}{more})")
        return out


# -- positions, rejections and repairs ------------------------------------------------------
@dataclass(frozen=True)
class _Pos:
    file: str
    line: int | None  # a line number, or None when `where` names a record or a JSON path
    where: str

    def error(self, message: str, field: str | None, fix: str | None) -> DataError:
        if self.line is not None:
            return DataError(message, file=self.file, line=self.line, field=field, fix=fix)
        return DataError(message, file=self.where, field=field, fix=fix)


def _rec_pos(rec: RawRecord) -> _Pos:
    return _Pos(rec.file, rec.line if rec.unit == "line" else None, rec.where)


def _line_pos(file: str, line: int) -> _Pos:
    return _Pos(file, line, f"{file}:{line}")


class _Ctx:
    def __init__(self, report: ReadReport, on_error: str):
        if on_error not in ("stop", "skip"):
            raise ValueError(f"on_error must be 'stop' or 'skip', not {on_error!r}")
        self.report, self.on_error = report, on_error
        self.ids: Counter[str] = Counter()

    def reject(self, reason: str, pos: _Pos, *, field: str | None = None, detail: str | None = None,
               fix: str | None = None) -> None:
        """on_error=stop: raise; skip: count. The caller drops the record after this returns."""
        message = reason if detail is None else f"{reason}: {detail}"
        if self.on_error == "stop":
            skip = "set data.on_error=skip to skip such records (they are counted)"
            raise pos.error(message, field, f"{fix}; or {skip}" if fix else f"fix the record, or {skip}")
        self.report.note(self.report.rejected, reason, pos.where, message)

    def fixed(self, reason: str, pos: _Pos, detail: str | None = None) -> None:
        self.report.note(self.report.fixed, reason, pos.where, detail or reason)


def _shown(path: str, p: Path) -> str:
    return path if path.startswith(BUILTIN_PREFIX) else str(p)


def _find(keys: list[str], name: str) -> str | None:
    """The key named `name`, matched exactly or else ignoring case."""
    if name in keys:
        return name
    for k in keys:
        if k.lower() == name.lower():
            return k
    return None


def _first(keys: list[str], names) -> str | None:
    for n in names:
        k = _find(keys, n)
        if k is not None:
            return k
    return None


def _keys(data: dict) -> list[str]:
    return [k for k in data if isinstance(k, str)]


def _as_text(value: object) -> str | None:
    """A text value: strings as they are, numbers as str(); None for anything else."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _note_unreadable(ctx: _Ctx, errors: list[DataError]) -> None:
    """Lines the reader itself could not parse (JSONL with on_error=skip)."""
    for e in errors:
        where = f"{e.file}:{e.line}" if e.line is not None else str(e.file)
        ctx.report.note(ctx.report.rejected, UNREADABLE, where, e.message)


def _objects(path: str, ctx: _Ctx, fix: str):
    """(record, position, mapping) for each record that is an object; others rejected, unreadable lines noted."""
    errors: list[DataError] = []
    for rec in read_records(path, ctx.on_error, errors):
        pos = _rec_pos(rec)
        if not isinstance(rec.data, dict):
            ctx.reject(NOT_OBJECT, pos, detail=f"got {type(rec.data).__name__}", fix=fix)
            continue
        yield rec, pos, rec.data
    _note_unreadable(ctx, errors)


# -- classify / pair --------------------------------------------------------------------------
def _text_fields(task: str, data: dict, file: str, text_field, text_b_field, label_field,
                 require_labels: bool) -> tuple[str, str | None, str | None]:
    keys = _keys(data)
    found = ", ".join(repr(k) for k in keys) or "none"
    if task == "classify":
        if text_field:
            a = _find(keys, text_field)
            if a is None:
                raise DataError(f"the text field '{text_field}' (task.text_field) is not in the data; "
                                f"fields found: {found}", file=file, fix="set task.text_field to one of them")
        else:
            a = _first(keys, TEXT_FIELDS)
            if a is None:
                raise DataError(f"no text field; fields found: {found}", file=file,
                                fix=f"set task.text_field to the field that holds the text "
                                    f"(found by itself: {', '.join(TEXT_FIELDS)})")
        b = None
    else:
        if text_field and text_b_field:
            candidates = [(text_field, text_b_field)]
        else:
            candidates = [p for p in PAIR_FIELDS if (text_field is None or p[0] == text_field)
                          and (text_b_field is None or p[1] == text_b_field)]
        a = b = None
        for ca, cb in candidates:
            a, b = _find(keys, ca), _find(keys, cb)
            if a is not None and b is not None:
                break
        else:
            auto = ", ".join(f"{x}/{y}" for x, y in PAIR_FIELDS)
            given = " and ".join(f"'{f}'" for f in (text_field, text_b_field) if f)
            raise DataError((f"the text fields {given} are not in the data" if given else "no pair of text fields")
                            + f"; fields found: {found}", file=file,
                            fix=f"set task.text_field and task.text_b_field (found by themselves: {auto})")
    if label_field:
        label = _find(keys, label_field)
        if label is None and require_labels:
            raise DataError(f"the label field '{label_field}' (task.label_field) is not in the data; "
                            f"fields found: {found}", file=file, fix="set task.label_field to one of them")
    else:
        label = _first(keys, LABEL_FIELDS)
        if label is None and require_labels:
            raise DataError(f"no label field; fields found: {found}", file=file,
                            fix=f"set task.label_field to the field that holds the label "
                                f"(found by itself: {', '.join(LABEL_FIELDS)})")
    return a, b, label


def _read_text(path: str, task: str, ctx: _Ctx, text_field, text_b_field, label_field,
               require_labels: bool) -> Iterator[TextExample]:
    fields = None
    for rec, pos, data in _objects(path, ctx, "write one object with named fields per record"):
        if fields is None:
            fields = _text_fields(task, data, rec.file, text_field, text_b_field, label_field, require_labels)
        fa, fb, fl = fields
        texts = []
        for f in (fa, fb) if fb else (fa,):
            t = _as_text(data.get(f))
            if t is None:
                ctx.reject(TEXT_NOT_TEXT, pos, field=f, detail=f"got {type(data.get(f)).__name__}")
                break
            if not t.strip():
                ctx.reject(EMPTY_TEXT, pos, field=f,
                           detail=f"'{f}' is missing" if data.get(f) is None else f"'{f}' is blank",
                           fix="give every record some text")
                break
            texts.append(t)
        else:
            raw = data.get(fl) if fl else None
            label, strip_fix = None, None
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                if require_labels:
                    ctx.reject(MISSING_LABEL, pos, field=fl,
                               detail=f"'{fl}' is missing" if raw is None else f"'{fl}' is blank",
                               fix="give every training/evaluation record a label")
                    continue
            elif isinstance(raw, (str, int, float, bool)):
                s = str(raw)
                label = s.strip()
                if label != s:
                    strip_fix = f"{s!r} became {label!r}"
            else:
                ctx.reject(LABEL_NOT_SINGLE, pos, field=fl, detail=f"got {type(raw).__name__}",
                           fix="give one label per record (multi-label data is not supported)")
                continue
            if strip_fix:
                ctx.fixed(FIX_LABEL_SPACE, pos, strip_fix)
            yield TextExample(pos.where, texts[0], texts[1] if fb else None, label)


# -- tag --------------------------------------------------------------------------------------
def _bio(tags: list[str], ctx: _Ctx, pos_of, name_of) -> list[str] | None:
    """Validate BIO tags and apply conlleval's repair; None when the sentence is rejected."""
    for k, t in enumerate(tags):
        if not _BIO.fullmatch(t):
            ctx.reject(NOT_BIO, pos_of(k), field="tags", detail=f"{t!r}{name_of(k)}",
                       fix="use the tags O, B-TYPE and I-TYPE (convert IOBES/BILOU tags to BIO first)")
            return None
    out: list[str] = []
    prev = "O"
    for k, t in enumerate(tags):
        if t.startswith("I-") and (prev == "O" or prev[2:] != t[2:]):
            new = "B-" + t[2:]
            ctx.fixed(FIX_BIO, pos_of(k), f"{t!r}{name_of(k)} after {prev!r} became {new!r}")
            t = new
        out.append(t)
        prev = t
    return out


class _Sentence:
    def __init__(self):
        self.tokens: list[str] = []
        self.tags: list[str | None] = []
        self.lines: list[int] = []
        self.problem: tuple | None = None


def _read_conll(path: str, ctx: _Ctx, require_labels: bool) -> Iterator[TagExample]:
    p = resolve_path(path)
    name = _shown(path, p)
    raw = p.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    sent = _Sentence()

    def problem(reason: str, pos: _Pos, detail: str, fix: str) -> None:
        if ctx.on_error == "stop":
            ctx.reject(reason, pos, field="tag" if reason == NO_TAG else None, detail=detail, fix=fix)
        if sent.problem is None:  # the first problem of the sentence is the one counted
            sent.problem = (reason, pos, detail, fix)

    def flush() -> Iterator[TagExample]:
        nonlocal sent
        s, sent = sent, _Sentence()
        if not s.tokens and s.problem is None:
            return  # blank lines only
        if s.problem is not None:
            reason, pos, detail, fix = s.problem
            ctx.reject(reason, pos, detail=detail, fix=fix)
            return
        tags = None
        if all(t is not None for t in s.tags):
            tags = _bio(s.tags, ctx, lambda k: _line_pos(name, s.lines[k]), lambda k: "")
            if tags is None:
                return
        yield TagExample(f"{name}:{s.lines[0]}", s.tokens, tags)

    for i, bline in enumerate(raw.split(b"\n"), start=1):
        bline = bline.rstrip(b"\r")
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError as e:
            problem(NOT_UTF8, _line_pos(name, i), f"at byte {e.start} of the line", "re-encode the file as UTF-8")
            line = bline.decode("utf-8", errors="replace")
        if not line.strip() or line.startswith("-DOCSTART-"):
            yield from flush()
            continue
        cols = _COLUMNS.split(line.strip(" \t\f\v"))
        tag = cols[-1] if len(cols) > 1 else None
        if tag is None and require_labels:
            problem(NO_TAG, _line_pos(name, i), f"token {cols[0]!r} has no tag column",
                    "put the tag in the last column, after a space or a tab")
        sent.tokens.append(cols[0])
        sent.tags.append(tag)
        sent.lines.append(i)
    yield from flush()


def _read_tag_records(path: str, ctx: _Ctx, require_labels: bool) -> Iterator[TagExample]:
    fields = None
    for rec, pos, data in _objects(path, ctx, "write one object with 'tokens' and 'tags' per record"):
        if fields is None:
            keys = _keys(data)
            found = ", ".join(repr(k) for k in keys) or "none"
            ft, fg = _first(keys, TOKEN_FIELDS), _first(keys, TAG_FIELDS)
            if ft is None:
                raise DataError(f"no tokens field; fields found: {found}", file=rec.file,
                                fix="name the list of words 'tokens' (or 'words') and the list of tags "
                                    "'tags' (or 'ner_tags', 'labels'), or use a CoNLL column file")
            if fg is None and require_labels:
                raise DataError(f"no tags field; fields found: {found}", file=rec.file,
                                fix="name the list of tags 'tags' (or 'ner_tags', 'labels')")
            fields = (ft, fg)
        ft, fg = fields
        tokens = data.get(ft)
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            ctx.reject(TOKENS_NOT_LIST, pos, field=ft,
                       detail="missing" if tokens is None else f"got {type(tokens).__name__}"
                       if not isinstance(tokens, list) else "a token is not a string",
                       fix="give the words of the sentence as a list of strings")
            continue
        if not tokens:
            ctx.reject(EMPTY_SENTENCE, pos, field=ft, detail="no tokens", fix="drop empty sentences")
            continue
        tags = data.get(fg) if fg else None
        if tags is None:
            if require_labels:
                ctx.reject(MISSING_TAGS, pos, field=fg, detail=f"'{fg}' is missing",
                           fix="give every sentence its tags")
                continue
        else:
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                ints = isinstance(tags, list) and all(isinstance(t, int) for t in tags)
                ctx.reject(TAGS_NOT_LIST, pos, field=fg,
                           detail="the tags are numbers" if ints else f"got {type(tags).__name__}"
                           if not isinstance(tags, list) else "a tag is not a string",
                           fix="write the tag names (O, B-PER, I-PER, ...), not class ids" if ints
                           else "give the tags as a list of strings")
                continue
            if len(tags) != len(tokens):
                ctx.reject(LENGTH_MISMATCH, pos, field=fg, detail=f"{len(tokens)} tokens, {len(tags)} tags",
                           fix="give exactly one tag per token")
                continue
            tags = _bio(tags, ctx, lambda k: pos, lambda k: f" at {fg}[{k}]")
            if tags is None:
                continue
        yield TagExample(pos.where, list(tokens), tags)


# -- extract-qa -------------------------------------------------------------------------------
def _start(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _occurrences(context: str, text: str) -> list[int]:
    out, i = [], context.find(text)
    while i >= 0:
        out.append(i)
        i = context.find(text, i + 1)
    return out


def _answer_pairs(raw: object) -> list[tuple[object, object]] | None:
    """(text, start) pairs from either answer layout; None when the layout is not recognised."""
    if raw is None:
        return []
    if isinstance(raw, dict):  # Hugging Face: {"text": [...], "answer_start": [...]}
        texts, starts = raw.get("text"), raw.get("answer_start")
        if texts is None and starts is None:
            return []
        if isinstance(texts, str) and not isinstance(starts, list):
            return [(texts, starts)]
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            return None
        return list(zip(texts, starts))
    if isinstance(raw, list):  # SQuAD: [{"text", "answer_start"}, ...]
        if not all(isinstance(a, dict) for a in raw):
            return None
        return [(a.get("text"), a.get("answer_start")) for a in raw]
    return None


def _qa_example(ctx: _Ctx, pos: _Pos, qid: object, question: object, context: object, answers: object,
                impossible: object, file: str, index: int, require_labels: bool) -> QAExample | None:
    q, c = _as_text(question), _as_text(context)
    if q is None or not q.strip():
        ctx.reject(EMPTY_QUESTION, pos, field="question", detail=None if q is not None else "not text",
                   fix="give every question some text")
        return None
    if c is None or not c.strip():
        ctx.reject(EMPTY_CONTEXT, pos, field="context", detail=None if c is not None else "not text",
                   fix="give every question its context")
        return None
    pairs = _answer_pairs(answers)
    if pairs is None:
        ctx.reject(BAD_ANSWERS, pos, field="answers",
                   detail='expected [{"text", "answer_start"}, ...] or {"text": [...], "answer_start": [...]}',
                   fix="give the answers in one of these layouts")
        return None
    if require_labels and (impossible is True or not pairs):
        ctx.reject(NO_ANSWER, pos, field="answers", detail="is_impossible is true" if impossible is True
                   else "no answers", fix="drop unanswerable questions")
        return None
    fixes: list[tuple[str, str]] = []
    kept: list[tuple[str, int]] = []
    not_found = False
    for k, (text, start) in enumerate(pairs):
        if not isinstance(text, str) or not text.strip():
            fixes.append((FIX_DROP_EMPTY, f"answers[{k}] text {text!r}"))
            continue
        s = _start(start)
        if s is not None and c[s:s + len(text)] == text:
            kept.append((text, s))
            continue
        occ = _occurrences(c, text)
        if not occ:
            fixes.append((FIX_DROP_NOT_FOUND, f"answers[{k}] {text!r}"))
            not_found = True
            continue
        target = s if s is not None else 0
        best = min(occ, key=lambda o: (abs(o - target), o))
        fixes.append((FIX_OFFSET, f"answers[{k}] {text!r} at {start!r} moved to {best}"))
        kept.append((text, best))
    if require_labels and not kept:
        if not_found:
            ctx.reject(NOT_FOUND, pos, field="answers", detail=", ".join(d for _, d in fixes),
                       fix="correct the answer text so it appears in the context")
        else:
            ctx.reject(NO_ANSWER, pos, field="answers", detail="every answer text is empty",
                       fix="give the answer text, or drop the question")
        return None
    if qid is None or (isinstance(qid, str) and not qid.strip()):
        qid = f"{file}#{index}"
        fixes.append((FIX_ID, f"id set to {qid!r}"))
    qid = str(qid)
    ctx.ids[qid] += 1
    if ctx.ids[qid] > 1:
        new = f"{qid}#{ctx.ids[qid]}"
        fixes.append((FIX_DUP_ID, f"id {qid!r} seen before: renamed {new!r}"))
        qid = new
    for reason, detail in fixes:
        ctx.fixed(reason, pos, detail)
    return QAExample(pos.where, qid, q, c, kept)


def _is_squad(obj: object) -> bool:
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        return False
    data = obj["data"]
    return not data or any(isinstance(a, dict) and "paragraphs" in a for a in data[:1])


def _read_squad(obj: dict, name: str, ctx: _Ctx, require_labels: bool) -> Iterator[QAExample]:
    n = 0
    fix = "use the SQuAD v1.1 layout: data[].paragraphs[].{context, qas[].{id, question, answers}}"
    for i, art in enumerate(obj["data"]):
        if not isinstance(art, dict) or not isinstance(art.get("paragraphs"), list):
            ctx.reject(BAD_SQUAD, _Pos(name, None, f"{name}: data[{i}]"), field="paragraphs",
                       detail="expected an object with a 'paragraphs' list", fix=fix)
            continue
        for j, para in enumerate(art["paragraphs"]):
            ppath = f"data[{i}].paragraphs[{j}]"
            if not isinstance(para, dict) or not isinstance(para.get("qas"), list):
                ctx.reject(BAD_SQUAD, _Pos(name, None, f"{name}: {ppath}"), field="qas",
                           detail="expected an object with 'context' and a 'qas' list", fix=fix)
                continue
            for k, qa in enumerate(para["qas"]):
                n += 1
                qid = qa.get("id") if isinstance(qa, dict) else None
                shown_id = f" (id {qid})" if qid is not None else ""
                pos = _Pos(name, None, f"{name}: {ppath}.qas[{k}]{shown_id}")
                if not isinstance(qa, dict):
                    ctx.reject(BAD_SQUAD, pos, detail="expected an object with 'id', 'question', 'answers'",
                               fix=fix)
                    continue
                ex = _qa_example(ctx, pos, qid, qa.get("question"), para.get("context"), qa.get("answers"),
                                 qa.get("is_impossible"), name, n, require_labels)
                if ex is not None:
                    yield ex


def _read_qa_records(path: str, ctx: _Ctx, require_labels: bool) -> Iterator[QAExample]:
    checked = False
    for rec, pos, data in _objects(path, ctx, "write one object with id, question, context and answers per record"):
        if not checked:
            keys = _keys(data)
            if "question" not in keys or "context" not in keys:
                raise DataError("expected SQuAD JSON or records with 'id', 'question', 'context', 'answers'; "
                                f"fields found: {', '.join(repr(k) for k in keys) or 'none'}", file=rec.file,
                                fix="use the SQuAD v1.1 layout or the Hugging Face 'squad' layout")
            checked = True
        ex = _qa_example(ctx, pos, data.get("id"), data.get("question"), data.get("context"),
                         data.get("answers"), data.get("is_impossible"), rec.file, rec.line, require_labels)
        if ex is not None:
            yield ex


def _read_qa(path: str, ctx: _Ctx, require_labels: bool) -> Iterator[QAExample]:
    p = resolve_path(path)
    if p.suffix.lower() == ".json":
        name = _shown(path, p)
        obj = _loads(_decode(p.read_bytes(), name, 1), name, 1)
        if _is_squad(obj):
            yield from _read_squad(obj, name, ctx, require_labels)
            return
    yield from _read_qa_records(path, ctx, require_labels)


# -- public -----------------------------------------------------------------------------------
def read_task(paths: list[str], task: str, *, text_field: str | None = None, text_b_field: str | None = None,
              label_field: str | None = None, require_labels: bool = True,
              on_error: str = "stop") -> tuple[list, ReadReport]:
    """The examples of `task` in `paths`, and what was rejected or repaired on the way.

    classify/pair → TextExample, tag → TagExample, extract-qa → QAExample. With on_error="stop"
    the first bad record raises DataError; with "skip" it is counted in report.rejected.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [str(p) for p in paths]
    report = ReadReport(files=list(paths))
    ctx = _Ctx(report, on_error)
    out: list = []
    for path in paths:
        if task in ("classify", "pair"):
            it = _read_text(path, task, ctx, text_field, text_b_field, label_field, require_labels)
        elif task == "tag":
            if Path(path).suffix.lower() in RECORD_SUFFIXES:
                it = _read_tag_records(path, ctx, require_labels)
            else:
                it = _read_conll(path, ctx, require_labels)
        else:
            it = _read_qa(path, ctx, require_labels)
        for ex in it:
            out.append(ex)
            report.kept += 1
    if not out:
        why = "; ".join(f"{n} {r}" for r, n in report.rejected.most_common(3))
        raise DataError(f"no usable {task} examples in {', '.join(paths)}" + (f" (rejected: {why})" if why else ""),
                        fix="check the files and task.type; the report lists what was rejected")
    return out, report


def _unwhere(where: str) -> _Pos:
    return _Pos(where, None, where)


def check_labels(examples: list[TextExample], known: list[str], report: ReadReport,
                 on_error: str) -> list[TextExample]:
    """Drop (skip) or refuse (stop) examples whose label the model was not trained on."""
    ctx = _Ctx(report, on_error)
    known_set = set(known)
    shown = ", ".join(repr(k) for k in list(known)[:10]) + (", …" if len(known_set) > 10 else "")
    out = []
    for ex in examples:
        if ex.label is not None and ex.label not in known_set:
            ctx.reject(f"label not seen in training: {ex.label!r}", _unwhere(ex.where), field="label",
                       fix=f"the model knows only the training labels ({shown})")
            report.kept = max(0, report.kept - 1)
            continue
        out.append(ex)
    return out


def check_tags(examples: list[TagExample], known: set[str], report: ReadReport,
               on_error: str) -> list[TagExample]:
    """Drop (skip) or refuse (stop) sentences with a tag whose type the model was not trained on.

    `known` holds tags (O, B-X, I-X) or bare types (X); B-X makes I-X known too.
    """
    ctx = _Ctx(report, on_error)
    types = {t[2:] if t[:2] in ("B-", "I-") else t for t in known if t != "O"}
    out = []
    for ex in examples:
        bad = next((t for t in ex.tags or [] if t != "O" and t not in known and _tag_type(t) not in types), None)
        if bad is not None:
            ctx.reject(f"tag type not seen in training: {_tag_type(bad)!r}", _unwhere(ex.where), field="tags",
                       detail=f"tag {bad!r}", fix=f"the model knows only the types {sorted(types)}")
            report.kept = max(0, report.kept - 1)
            continue
        out.append(ex)
    return out


def _tag_type(tag: str) -> str:
    return tag[2:] if tag[:2] in ("B-", "I-") else tag


def label_list(examples: list) -> list[str]:
    """The labels the examples define, sorted (numerically when all are integers).

    tag: "O" first, then B-X and I-X for every type X seen, sorted; I-X is listed even when only
    B-X occurs, so every valid tag of a known type has an id.
    """
    if any(isinstance(ex, TagExample) for ex in examples):
        types = {_tag_type(t) for ex in examples for t in ex.tags or [] if t != "O"}
        return ["O"] + sorted(f"{p}-{x}" for x in types for p in "BI")
    labels = {ex.label for ex in examples if getattr(ex, "label", None) is not None}
    if labels and all(_INT.fullmatch(l) for l in labels):
        return sorted(labels, key=lambda l: (int(l), l))
    return sorted(labels)
