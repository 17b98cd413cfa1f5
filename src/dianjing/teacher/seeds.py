"""Seed tasks in self-instruct's seed_tasks.jsonl format; the project's own set ships as builtin:seed_tasks.

One JSON object a line: {"id", "name", "instruction", "instances": [{"input", "output"}, …],
"is_classification"}. `id` and `name` may be left out (the line number stands in).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dianjing.errors import DataError

BUILTIN_SEEDS = "builtin:seed_tasks"


@dataclass(frozen=True)
class SeedTask:
    id: str
    name: str
    instruction: str
    instances: tuple[tuple[str, str], ...]  # (input, output)
    is_classification: bool


def seeds_path(path: str) -> Path:
    if path == BUILTIN_SEEDS:
        return Path(str(resources.files("dianjing.assets").joinpath("dianjing_seeds.jsonl")))
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"seed file {p} does not exist",
                        fix=f"pass --seeds FILE (self-instruct's seed_tasks.jsonl format) or leave it out "
                            f"for the built-in seeds ({BUILTIN_SEEDS})")
    return p


def load_seeds(path: str = BUILTIN_SEEDS) -> list[SeedTask]:
    """Read and check seed tasks; every problem names the file, line and field."""
    p = seeds_path(path)
    shown = path if path == BUILTIN_SEEDS else str(p)
    tasks: list[SeedTask] = []
    ids: dict[str, int] = {}
    for no, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON: {e.msg} at column {e.colno}", file=shown, line=no) from None
        if not isinstance(d, dict):
            raise DataError("expected an object {id, name, instruction, instances, is_classification}",
                            file=shown, line=no)
        instruction = d.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise DataError("missing or empty", file=shown, line=no, field="instruction")
        inst = d.get("instances")
        if not isinstance(inst, list) or not inst:
            raise DataError("expected a non-empty list of {input, output}", file=shown, line=no,
                            field="instances")
        pairs = []
        for k, x in enumerate(inst):
            if not isinstance(x, dict) or not isinstance(x.get("output"), str) \
                    or not isinstance(x.get("input", ""), str):
                raise DataError("expected {input: text, output: text}", file=shown, line=no,
                                field=f"instances[{k}]")
            pairs.append((x.get("input", ""), x["output"]))
        is_cls = d.get("is_classification", False)
        if not isinstance(is_cls, bool):
            raise DataError(f"expected true or false, got {is_cls!r}", file=shown, line=no,
                            field="is_classification")
        sid = str(d.get("id") or f"line_{no}")
        if sid in ids:
            raise DataError(f"id {sid!r} also used on line {ids[sid]}", file=shown, line=no, field="id",
                            fix="give every seed task its own id: provenance records which seeds were used")
        ids[sid] = no
        tasks.append(SeedTask(sid, str(d.get("name") or sid), instruction.strip(), tuple(pairs), is_cls))
    if len(tasks) < 2:
        raise DataError(f"{len(tasks)} seed task(s); at least 2 are needed to prompt the teacher", file=shown,
                        fix="add seed tasks, or use the built-in ones (leave --seeds out)")
    return tasks


def seeds_digest(tasks: list[SeedTask]) -> str:
    """A short fingerprint of the seeds, so a resumed run can tell that they changed."""
    h = hashlib.sha256()
    for t in tasks:
        h.update(json.dumps([t.id, t.instruction, t.instances, t.is_classification], ensure_ascii=False).encode())
    return h.hexdigest()[:16]
