"""tag: token tagging (NER, chunking) data in BIO form.

Two layouts:
  CoNLL-style columns (token first, tag last, a blank line between sentences, -DOCSTART- lines
  ignored), in any file that is not .json/.jsonl/.ndjson/.csv/.parquet;
  records with "tokens"/"words" and "tags"/"ner_tags"/"labels" (lists of strings).

Tags must be O, B-TYPE or I-TYPE. An I- tag that starts an entity (after O or after another
type) becomes B-, as conlleval reads it; each such repair is counted in report.fixed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from dianjing.data.readers import resolve_path, shown_name
from dianjing.data.specialist_readers.common import Checker, Position, TagExample, first_key, objects, str_keys
from dianjing.errors import DataError

TOKEN_FIELDS = ("tokens", "words")
TAG_FIELDS = ("tags", "ner_tags", "labels")

# rejection reasons
NO_TAG = "token without a tag"
NOT_UTF8 = "not valid UTF-8"
LENGTH_MISMATCH = "tokens and tags differ in length"
NOT_BIO = "tag not in BIO form"
EMPTY_SENTENCE = "empty sentence"
TOKENS_NOT_LIST = "tokens are not a list of strings"
TAGS_NOT_LIST = "tags are not a list of strings"
MISSING_TAGS = "missing tags"
# repairs
FIX_BIO = "I- tag without a B- before it: became B-"

_BIO = re.compile(r"O|[BI]-.+", re.S)
_COLUMNS = re.compile(r"[ \t]+")


def tag_type(tag: str) -> str:
    """The entity type of a tag: PER for B-PER and I-PER; the tag itself otherwise."""
    return tag[2:] if tag[:2] in ("B-", "I-") else tag


def _bio(tags: list[str], checker: Checker, pos_of, name_of) -> list[str] | None:
    """Validate BIO tags and apply conlleval's repair; None when the sentence is rejected."""
    for k, t in enumerate(tags):
        if not _BIO.fullmatch(t):
            checker.reject(NOT_BIO, pos_of(k), field="tags", detail=f"{t!r}{name_of(k)}",
                           fix="use the tags O, B-TYPE and I-TYPE (convert IOBES/BILOU tags to BIO first)")
            return None
    out: list[str] = []
    prev = "O"
    for k, t in enumerate(tags):
        if t.startswith("I-") and (prev == "O" or prev[2:] != t[2:]):
            new = "B-" + t[2:]
            checker.fixed(FIX_BIO, pos_of(k), f"{t!r}{name_of(k)} after {prev!r} became {new!r}")
            t = new
        out.append(t)
        prev = t
    return out


class _Sentence:
    def __init__(self):
        self.tokens: list[str] = []
        self.tags: list[str | None] = []
        self.lines: list[int] = []
        self.problem: tuple | None = None  # the first (reason, position, field, detail, fix) of the sentence


def read_conll(path: str, checker: Checker, require_labels: bool) -> Iterator[TagExample]:
    """The sentences of a CoNLL-style column file, each named by the line of its first token."""
    p = resolve_path(path)
    name = shown_name(path, p)
    raw = p.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    sent = _Sentence()

    def problem(reason: str, pos: Position, field: str | None, detail: str, fix: str) -> None:
        # a sentence is rejected (or stops the read) once, for its first problem, when it ends
        if sent.problem is None:
            sent.problem = (reason, pos, field, detail, fix)

    def flush() -> Iterator[TagExample]:
        nonlocal sent
        s, sent = sent, _Sentence()
        if not s.tokens and s.problem is None:
            return  # blank lines only
        if s.problem is not None:
            reason, pos, field, detail, fix = s.problem
            checker.reject(reason, pos, field=field, detail=detail, fix=fix)
            return
        tags = None
        if all(t is not None for t in s.tags):
            tags = _bio(s.tags, checker, lambda k: Position.at_line(name, s.lines[k]), lambda k: "")
            if tags is None:
                return
        yield TagExample(f"{name}:{s.lines[0]}", s.tokens, tags)

    for i, bline in enumerate(raw.split(b"\n"), start=1):
        bline = bline.rstrip(b"\r")
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError as e:
            problem(NOT_UTF8, Position.at_line(name, i), None, f"at byte {e.start} of the line",
                    "re-encode the file as UTF-8")
            line = bline.decode("utf-8", errors="replace")
        if not line.strip() or line.startswith("-DOCSTART-"):
            yield from flush()
            continue
        cols = _COLUMNS.split(line.strip(" \t\f\v"))
        tag = cols[-1] if len(cols) > 1 else None
        if tag is None and require_labels:
            problem(NO_TAG, Position.at_line(name, i), "tag", f"token {cols[0]!r} has no tag column",
                    "put the tag in the last column, after a space or a tab")
        sent.tokens.append(cols[0])
        sent.tags.append(tag)
        sent.lines.append(i)
    yield from flush()


def read_tag_records(path: str, checker: Checker, require_labels: bool) -> Iterator[TagExample]:
    """The sentences of a file of records with a list of tokens and a list of tags each."""
    fields = None
    for rec, pos, data in objects(path, checker, "write one object with 'tokens' and 'tags' per record"):
        if fields is None:
            keys = str_keys(data)
            found = ", ".join(repr(k) for k in keys) or "none"
            ft, fg = first_key(keys, TOKEN_FIELDS), first_key(keys, TAG_FIELDS)
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
            checker.reject(TOKENS_NOT_LIST, pos, field=ft,
                           detail="missing" if tokens is None else f"got {type(tokens).__name__}"
                           if not isinstance(tokens, list) else "a token is not a string",
                           fix="give the words of the sentence as a list of strings")
            continue
        if not tokens:
            checker.reject(EMPTY_SENTENCE, pos, field=ft, detail="no tokens", fix="drop empty sentences")
            continue
        tags = data.get(fg) if fg else None
        if tags is None:
            if require_labels:
                checker.reject(MISSING_TAGS, pos, field=fg, detail=f"'{fg}' is missing",
                               fix="give every sentence its tags")
                continue
        else:
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                ints = isinstance(tags, list) and all(isinstance(t, int) for t in tags)
                checker.reject(TAGS_NOT_LIST, pos, field=fg,
                               detail="the tags are numbers" if ints else f"got {type(tags).__name__}"
                               if not isinstance(tags, list) else "a tag is not a string",
                               fix="write the tag names (O, B-PER, I-PER, ...), not class ids" if ints
                               else "give the tags as a list of strings")
                continue
            if len(tags) != len(tokens):
                checker.reject(LENGTH_MISMATCH, pos, field=fg, detail=f"{len(tokens)} tokens, {len(tags)} tags",
                               fix="give exactly one tag per token")
                continue
            tags = _bio(tags, checker, lambda k: pos, lambda k: f" at {fg}[{k}]")
            if tags is None:
                continue
        yield TagExample(pos.where, list(tokens), tags)
