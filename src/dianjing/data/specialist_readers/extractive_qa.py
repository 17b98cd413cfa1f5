"""extract-qa: a question, its context, and answers that are spans of the context.

Two layouts:
  SQuAD v1.1 JSON (DRCD uses it too): data[].paragraphs[].{context, qas[].{id, question, answers}};
  records in the Hugging Face "squad" layout, in any record file:
  {id, question, context, answers: {"text": [...], "answer_start": [...]}} (or SQuAD's answer list).

Answer offsets are character offsets. One that misses its text is moved to the nearest
occurrence of the text; an answer whose text is not in the context, or is empty, is dropped;
a missing id becomes <file>#<index> and a repeated one <id>#<n>. Each repair is counted.
"""

from __future__ import annotations

from collections.abc import Iterator

from dianjing.data.readers import decode_utf8, parse_json, resolve_path, shown_name
from dianjing.data.specialist_readers.common import Checker, Position, QAExample, as_text, objects, str_keys
from dianjing.errors import DataError

# rejection reasons
EMPTY_QUESTION = "empty question"
EMPTY_CONTEXT = "empty context"
NO_ANSWER = "no answer (unanswerable questions are not supported)"
NOT_FOUND = "answer text not found in context"
BAD_ANSWERS = "answers not in SQuAD form"
BAD_SQUAD = "not a SQuAD entry"
# repairs
FIX_OFFSET = "answer offset did not match the context: moved to the nearest occurrence of the answer text"
FIX_DROP_NOT_FOUND = "answer text not found in context: answer dropped"
FIX_DROP_EMPTY = "empty answer text: answer dropped"
FIX_ID = "missing id: used <file>#<index>"
FIX_DUP_ID = "duplicate id: renamed <id>#<n>"


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


def _qa_example(checker: Checker, pos: Position, qid: object, question: object, context: object, answers: object,
                impossible: object, file: str, index: int, require_labels: bool) -> QAExample | None:
    q, c = as_text(question), as_text(context)
    if q is None or not q.strip():
        checker.reject(EMPTY_QUESTION, pos, field="question", detail=None if q is not None else "not text",
                       fix="give every question some text")
        return None
    if c is None or not c.strip():
        checker.reject(EMPTY_CONTEXT, pos, field="context", detail=None if c is not None else "not text",
                       fix="give every question its context")
        return None
    pairs = _answer_pairs(answers)
    if pairs is None:
        checker.reject(BAD_ANSWERS, pos, field="answers",
                       detail='expected [{"text", "answer_start"}, ...] or {"text": [...], "answer_start": [...]}',
                       fix="give the answers in one of these layouts")
        return None
    if require_labels and (impossible is True or not pairs):
        checker.reject(NO_ANSWER, pos, field="answers", detail="is_impossible is true" if impossible is True
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
            checker.reject(NOT_FOUND, pos, field="answers", detail=", ".join(d for _, d in fixes),
                           fix="correct the answer text so it appears in the context")
        else:
            checker.reject(NO_ANSWER, pos, field="answers", detail="every answer text is empty",
                           fix="give the answer text, or drop the question")
        return None
    if qid is None or (isinstance(qid, str) and not qid.strip()):
        qid = f"{file}#{index}"
        fixes.append((FIX_ID, f"id set to {qid!r}"))
    qid = str(qid)
    checker.ids[qid] += 1
    if checker.ids[qid] > 1:
        new = f"{qid}#{checker.ids[qid]}"
        fixes.append((FIX_DUP_ID, f"id {qid!r} seen before: renamed {new!r}"))
        qid = new
    for reason, detail in fixes:
        checker.fixed(reason, pos, detail)
    return QAExample(pos.where, qid, q, c, kept)


def _is_squad(obj: object) -> bool:
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        return False
    data = obj["data"]
    return not data or any(isinstance(a, dict) and "paragraphs" in a for a in data[:1])


def _read_squad(obj: dict, name: str, checker: Checker, require_labels: bool) -> Iterator[QAExample]:
    n = 0
    fix = "use the SQuAD v1.1 layout: data[].paragraphs[].{context, qas[].{id, question, answers}}"
    for i, art in enumerate(obj["data"]):
        if not isinstance(art, dict) or not isinstance(art.get("paragraphs"), list):
            checker.reject(BAD_SQUAD, Position(name, None, f"{name}: data[{i}]"), field="paragraphs",
                           detail="expected an object with a 'paragraphs' list", fix=fix)
            continue
        for j, para in enumerate(art["paragraphs"]):
            ppath = f"data[{i}].paragraphs[{j}]"
            if not isinstance(para, dict) or not isinstance(para.get("qas"), list):
                checker.reject(BAD_SQUAD, Position(name, None, f"{name}: {ppath}"), field="qas",
                               detail="expected an object with 'context' and a 'qas' list", fix=fix)
                continue
            for k, qa in enumerate(para["qas"]):
                n += 1
                qid = qa.get("id") if isinstance(qa, dict) else None
                shown_id = f" (id {qid})" if qid is not None else ""
                pos = Position(name, None, f"{name}: {ppath}.qas[{k}]{shown_id}")
                if not isinstance(qa, dict):
                    checker.reject(BAD_SQUAD, pos, detail="expected an object with 'id', 'question', 'answers'",
                                   fix=fix)
                    continue
                ex = _qa_example(checker, pos, qid, qa.get("question"), para.get("context"), qa.get("answers"),
                                 qa.get("is_impossible"), name, n, require_labels)
                if ex is not None:
                    yield ex


def _read_qa_records(path: str, checker: Checker, require_labels: bool) -> Iterator[QAExample]:
    checked = False
    for rec, pos, data in objects(path, checker,
                                  "write one object with id, question, context and answers per record"):
        if not checked:
            keys = str_keys(data)
            if "question" not in keys or "context" not in keys:
                raise DataError("expected SQuAD JSON or records with 'id', 'question', 'context', 'answers'; "
                                f"fields found: {', '.join(repr(k) for k in keys) or 'none'}", file=rec.file,
                                fix="use the SQuAD v1.1 layout or the Hugging Face 'squad' layout")
            checked = True
        ex = _qa_example(checker, pos, data.get("id"), data.get("question"), data.get("context"),
                         data.get("answers"), data.get("is_impossible"), rec.file, rec.line, require_labels)
        if ex is not None:
            yield ex


def read_qa(path: str, checker: Checker, require_labels: bool) -> Iterator[QAExample]:
    """The questions of one file: SQuAD JSON if it is that, else records in the HF "squad" layout."""
    p = resolve_path(path)
    if p.suffix.lower() == ".json":
        name = shown_name(path, p)
        obj = parse_json(decode_utf8(p.read_bytes(), name, 1), name, 1)
        if _is_squad(obj):
            yield from _read_squad(obj, name, checker, require_labels)
            return
    yield from _read_qa_records(path, checker, require_labels)
