"""classify and pair: one text (or two) and a label per record, from CSV/TSV, JSON, JSONL or Parquet.

The text and label fields are the ones named in the task config, or found by their usual names
(TEXT_FIELDS, PAIR_FIELDS, LABEL_FIELDS; case does not matter) in the file's first record.
"""

from __future__ import annotations

from collections.abc import Iterator

from dianjing.data.specialist_readers.common import (Checker, TextExample, as_text, find_key, first_key, objects,
                                                     str_keys)
from dianjing.errors import DataError

TEXT_FIELDS = ("text", "sentence", "content", "review", "document", "title")
LABEL_FIELDS = ("label", "labels", "category", "class", "sentiment", "target")
PAIR_FIELDS = (("text_a", "text_b"), ("sentence1", "sentence2"), ("premise", "hypothesis"),
               ("question1", "question2"), ("question", "sentence"), ("text", "text_pair"))

# rejection reasons
EMPTY_TEXT = "empty text"
TEXT_NOT_TEXT = "text is not a string"
MISSING_LABEL = "missing label"
LABEL_NOT_SINGLE = "label is not a single value"
# repairs
FIX_LABEL_SPACE = "label had surrounding whitespace: stripped"


def text_fields(task: str, data: dict, file: str, text_field, text_b_field, label_field,
                require_labels: bool) -> tuple[str, str | None, str | None]:
    """(text, text_b, label) field names of a file, from its first record; DataError naming the config key."""
    keys = str_keys(data)
    found = ", ".join(repr(k) for k in keys) or "none"
    if task == "classify":
        if text_field:
            a = find_key(keys, text_field)
            if a is None:
                raise DataError(f"the text field '{text_field}' (task.text_field) is not in the data; "
                                f"fields found: {found}", file=file, fix="set task.text_field to one of them")
        else:
            a = first_key(keys, TEXT_FIELDS)
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
            a, b = find_key(keys, ca), find_key(keys, cb)
            if a is not None and b is not None:
                break
        else:
            auto = ", ".join(f"{x}/{y}" for x, y in PAIR_FIELDS)
            given = " and ".join(f"'{f}'" for f in (text_field, text_b_field) if f)
            raise DataError((f"the text fields {given} are not in the data" if given else "no pair of text fields")
                            + f"; fields found: {found}", file=file,
                            fix=f"set task.text_field and task.text_b_field (found by themselves: {auto})")
    if label_field:
        label = find_key(keys, label_field)
        if label is None and require_labels:
            raise DataError(f"the label field '{label_field}' (task.label_field) is not in the data; "
                            f"fields found: {found}", file=file, fix="set task.label_field to one of them")
    else:
        label = first_key(keys, LABEL_FIELDS)
        if label is None and require_labels:
            raise DataError(f"no label field; fields found: {found}", file=file,
                            fix=f"set task.label_field to the field that holds the label "
                                f"(found by itself: {', '.join(LABEL_FIELDS)})")
    return a, b, label


def read_text(path: str, task: str, checker: Checker, text_field, text_b_field, label_field,
              require_labels: bool) -> Iterator[TextExample]:
    """The classify (task="classify") or pair examples of one file."""
    fields = None
    for rec, pos, data in objects(path, checker, "write one object with named fields per record"):
        if fields is None:
            fields = text_fields(task, data, rec.file, text_field, text_b_field, label_field, require_labels)
        fa, fb, fl = fields
        texts = []
        for f in (fa, fb) if fb else (fa,):
            t = as_text(data.get(f))
            if t is None:
                checker.reject(TEXT_NOT_TEXT, pos, field=f, detail=f"got {type(data.get(f)).__name__}")
                break
            if not t.strip():
                checker.reject(EMPTY_TEXT, pos, field=f,
                               detail=f"'{f}' is missing" if data.get(f) is None else f"'{f}' is blank",
                               fix="give every record some text")
                break
            texts.append(t)
        else:
            raw = data.get(fl) if fl else None
            label, strip_fix = None, None
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                if require_labels:
                    checker.reject(MISSING_LABEL, pos, field=fl,
                                   detail=f"'{fl}' is missing" if raw is None else f"'{fl}' is blank",
                                   fix="give every training/evaluation record a label")
                    continue
            elif isinstance(raw, (str, int, float, bool)):
                s = str(raw)
                label = s.strip()
                if label != s:
                    strip_fix = f"{s!r} became {label!r}"
            else:
                checker.reject(LABEL_NOT_SINGLE, pos, field=fl, detail=f"got {type(raw).__name__}",
                               fix="give one label per record (multi-label data is not supported)")
                continue
            if strip_fix:
                checker.fixed(FIX_LABEL_SPACE, pos, strip_fix)
            yield TextExample(pos.where, texts[0], texts[1] if fb else None, label)
