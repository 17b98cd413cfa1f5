"""What makes a run resumable and loss-free: the request journal and the commit ledger.

Journal (`requests.jsonl`): every teacher reply, with the request that got it, appended as
soon as it arrives, and every failed attempt. A request is named by the pipeline (stage,
round, task) plus a hash of its body; a rerun asking the same thing gets the recorded reply
and sends nothing, so what was paid for is paid once.

Ledger (`commits.jsonl`): the data files (intermediate JSONL, rejected.jsonl, the output)
change only by commits. A unit of work appends its lines to its files, flushes and fsyncs
them, then writes one commit line with the files' new sizes. Opening the ledger truncates
each file back to its last committed size, so a unit that was killed halfway is dropped
whole and done again (from the journal, at no cost): no duplicated and no lost records.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

from dianjing.errors import DianjingError


def _dumps(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Whole lines of a JSONL file and the byte length they cover (a torn last line is left out)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    rows = []
    for no, line in enumerate(data[:end].splitlines(), 1):
        if line.strip():
            rows.append(_loads(line, path, no))
    return rows, end


def _loads(line: bytes, path: Path, no: int) -> dict:
    try:
        return json.loads(line)
    except ValueError:
        raise DianjingError(f"{path}:{no}: not valid JSON; the file was changed outside dianjing",
                            fix=f"restore it, or start over (delete the work folder {path.parent})") from None


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Journal:
    """Append-only record of replies and failed attempts; replies looked up by request key.

    Only each reply's place in the file is kept in memory (a 50k-instruction run makes a few
    hundred thousand requests); a reply is read back from the file when a rerun asks again.
    """

    def __init__(self, path: Path):
        self.path = path
        self._where: dict[str, tuple[int, int]] = {}  # key → (offset, length) of its reply line
        self.failures: Counter = Counter()  # cause → failed attempts, over all runs
        self.gave_up = 0
        self.prompt_tokens = self.completion_tokens = self.without_usage = 0
        end = 0
        if path.exists():
            with open(path, "rb") as f:
                for no, line in enumerate(f, 1):
                    if not line.endswith(b"\n"):
                        break  # a torn last line from a kill
                    if line.strip():
                        self._note(_loads(line, path, no), end, len(line))
                    end += len(line)
            if path.stat().st_size != end:
                with open(path, "r+b") as f:
                    f.truncate(end)
        self._f = open(path, "ab")
        self._r = open(path, "rb")

    def _note(self, r: dict, offset: int, length: int) -> None:
        kind = r["kind"]
        if kind == "reply":
            self._where[r["key"]] = (offset, length)
            usage = r["response"].get("usage")
            if isinstance(usage, dict):
                self.prompt_tokens += _int(usage.get("prompt_tokens"))
                self.completion_tokens += _int(usage.get("completion_tokens"))
            else:
                self.without_usage += 1
        elif kind == "failure":
            self.failures[r["cause"]] += 1
        elif kind == "gave_up":
            self.gave_up += 1

    @property
    def replies(self) -> int:
        return len(self._where)

    def reply(self, key: str) -> dict | None:
        where = self._where.get(key)
        if where is None:
            return None
        return json.loads(os.pread(self._r.fileno(), where[1], where[0]))

    def append(self, entry: dict) -> None:
        line = _dumps(entry)
        offset = os.fstat(self._f.fileno()).st_size
        self._f.write(line)
        self._f.flush()
        self._note(entry, offset, len(line))

    def close(self) -> None:
        self._f.close()
        self._r.close()


def _int(v) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


class Ledger:
    """Data files that change only by whole committed units."""

    def __init__(self, work: Path, files: dict[str, Path], log=print):
        self.path = work / "commits.jsonl"
        self.files = files
        rows, end = read_jsonl(self.path)
        if self.path.exists() and self.path.stat().st_size != end:
            with open(self.path, "r+b") as f:
                f.truncate(end)
        self.units: list[str] = []
        self.sizes: dict[str, int] = {}
        for r in rows:
            self.units.append(r["unit"])
            self.sizes.update(r["sizes"])
        self.done = set(self.units)
        self._handles = {}
        for name, p in files.items():
            size = self.sizes.get(name, 0)
            actual = p.stat().st_size if p.exists() else 0
            if actual < size:
                raise DianjingError(
                    f"{p} has {actual} bytes but {size} were written to it by this run (see {self.path}); "
                    "it was changed or replaced outside dianjing",
                    fix=f"restore the file, or start over: delete {work} and {p}")
            if actual > size:
                log(f"{p}: dropping {actual - size} bytes of a unit that was not finished; it is done again")
                with open(p, "r+b") as f:
                    f.truncate(size)

    def _handle(self, name: str):
        h = self._handles.get(name)
        if h is None:
            p = self.files[name]
            p.parent.mkdir(parents=True, exist_ok=True)
            h = self._handles[name] = open(p, "ab")
        return h

    def rows(self, name: str) -> list[dict]:
        return read_jsonl(self.files[name])[0]

    def commit(self, unit: str, lines: dict[str, list[dict]]) -> None:
        """Append each file's lines, make them durable, then record the unit as done."""
        sizes = {}
        for name, records in lines.items():
            h = self._handle(name)
            if records:
                h.write(b"".join(_dumps(r) for r in records))
                h.flush()
                os.fsync(h.fileno())
            sizes[name] = os.fstat(h.fileno()).st_size
        with open(self.path, "ab") as f:
            f.write(_dumps({"unit": unit, "sizes": sizes, "time": now_iso()}))
        self.sizes.update(sizes)
        self.units.append(unit)
        self.done.add(unit)

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()
