"""What a stage replays of the earlier tasks: LAMOL's generated pseudo-examples, or stored real ones.

Before a new task (after the first), ⌈γ·|its training set|⌉ examples are replayed, shared evenly among
the earlier tasks (the first tasks take one more when it does not divide). LAMOL generates each from
its task's generation token, sampling with top-k until the end token (chho33/LAMOL utils.py:
create_extra_data, sample_sequence); one that does not parse into exactly one question and one
answer, or is too long, is dropped, and every drop is counted by reason. `replay` draws the same
numbers of real training examples instead.

The stage's folder keeps what it replays, so a resumed stage trains on exactly the same examples:

    replay.jsonl   one line per example generated (or drawn): task, text, prompt, answer, kept, reason
    replay.json    the counts: requested, generated, kept, dropped by reason, per task (written last)
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from pathlib import Path

import torch

from dianjing.infer.generate import SamplingParams, can_rearrange, decode_step, eos_ids, prefill, sample_rows, select
from dianjing.lifelong.examples import Layout
from dianjing.lifelong.tasks import QAExample

REPLAY_JSONL, REPLAY_JSON = "replay.jsonl", "replay.json"
NO_END = "no end token before max_length (too long)"
NO_MARKER = "no answer marker"
MANY_MARKERS = "more than one answer marker"
NO_QUESTION = "empty question"
NO_ANSWER = "empty answer"
TOO_LONG = "longer than max_length once rendered"


def replay_counts(gamma: float, n_new: int, earlier: list[str]) -> dict[str, int]:
    """⌈γ·n_new⌉ shared evenly among the earlier tasks, the first ones taking the remainder."""
    total = math.ceil(gamma * n_new)
    each, extra = divmod(total, len(earlier))
    return {t: each + (i < extra) for i, t in enumerate(earlier)}


@torch.inference_mode()
def sample(model, prompts: list[list[int]], params: SamplingParams, max_new: list[int], pad_id: int,
           eos: set[int], seeds: list[int] | None = None) -> list[tuple[list[int], bool]]:
    """Generate for each prompt until an end token or max_new tokens: (new ids, ended with an end token).

    One left-padded batch with a KV cache (infer/generate.py); rows that finish leave it. Each row has its
    own seeded generator, so what a row samples does not depend on the other rows' draws."""
    n = len(prompts)
    gens = [torch.Generator().manual_seed(s) for s in seeds] if seeds is not None else [None] * n
    out: list[list[int]] = [[] for _ in range(n)]
    ended = [False] * n
    live = [i for i in range(n) if max_new[i] > 0]
    if not live:
        return [(o, e) for o, e in zip(out, ended)]
    batch, logits = prefill(model, [prompts[i] for i in live], pad_id)  # rows without room are done already
    rearrange = can_rearrange(batch.cache)
    rows = list(live)  # batch row -> prompt index (without rearranging, finished rows stay and are ignored)
    while True:
        nxt = sample_rows(logits, [params] * len(rows), [gens[i] for i in rows])
        keep = []
        for r, (i, tok) in enumerate(zip(rows, nxt)):
            if i not in live:
                keep.append(r)
                continue
            if tok in eos:
                ended[i] = True
            else:
                out[i].append(tok)
            if ended[i] or len(out[i]) >= max_new[i]:
                live.remove(i)
            else:
                keep.append(r)
        if not live:
            break
        if rearrange and len(keep) < len(rows):
            batch = select(batch, keep)
            rows, nxt = [rows[r] for r in keep], [nxt[r] for r in keep]
        logits = decode_step(model, batch, [t if t not in eos else pad_id for t in nxt])
    return [(o, e) for o, e in zip(out, ended)]


def parse(text: str, marker: str) -> tuple[str, str] | str:
    """A generated example's text → (prompt, answer), or the reason it does not parse."""
    n = text.count(marker)
    if n == 0:
        return NO_MARKER
    if n > 1:
        return MANY_MARKERS
    prompt, answer = (s.strip() for s in text.split(marker))
    if not prompt:
        return NO_QUESTION
    if not answer:
        return NO_ANSWER
    return prompt, answer


def generate(model, tokenizer, layout: Layout, counts: dict[str, int], settings, max_length: int, seed: int,
             log=print) -> tuple[list[dict], dict]:
    """Pseudo-examples of the tasks in `counts` (task → how many), each a record for replay.jsonl, and the
    counts for replay.json."""
    params = SamplingParams(temperature=settings.temperature, top_p=1.0, top_k=settings.top_k)
    eos, pad = eos_ids(model, tokenizer) | {layout.eos}, tokenizer.pad_token_id
    jobs = [(t, k) for t, n in counts.items() for k in range(n)]
    records: list[dict] = []
    for s in range(0, len(jobs), settings.batch_size):
        chunk = jobs[s:s + settings.batch_size]
        prompts = [layout.gen_prompt(t) for t, _ in chunk]
        got = sample(model, prompts, params, [max_length - len(p) for p in prompts], pad, eos,
                     seeds=[seed * 1_000_003 + s + j for j in range(len(chunk))])
        for (task, _), (ids, ended) in zip(chunk, got):
            records.append(_record(layout, task, tokenizer.decode(ids, skip_special_tokens=True), ended,
                                   max_length))
        log(f"  generated {len(records)} of {len(jobs)} pseudo-examples")
    return records, summarize(records, counts, "pseudo")


def _record(layout: Layout, task: str, text: str, ended: bool, max_length: int) -> dict:
    rec = {"task": task, "text": text, "prompt": None, "answer": None, "kept": False, "reason": None}
    got = parse(text, layout.marker) if ended else NO_END
    if isinstance(got, str):
        rec["reason"] = got
        return rec
    rec["prompt"], rec["answer"] = got
    if len(layout.lm_row(QAExample(task, got[0], [got[1]])).input_ids) > max_length:
        rec["reason"] = TOO_LONG
        return rec
    rec["kept"] = True
    return rec


def draw_real(tasks: dict[str, list[QAExample]], counts: dict[str, int], seed: int) -> tuple[list[dict], dict]:
    """`replay`: counts[task] real training examples of each earlier task, drawn without replacement
    (when a task has fewer, each of them is drawn as evenly often as the count allows)."""
    rng = random.Random(seed)
    records = []
    for task, n in counts.items():
        pool = tasks[task]
        rounds, rest = divmod(n, len(pool))
        for ex in [ex for _ in range(rounds) for ex in rng.sample(pool, len(pool))] + rng.sample(pool, rest):
            records.append({"task": task, "text": None, "prompt": ex.prompt, "answer": ex.answer, "kept": True,
                            "reason": None, "where": ex.where})
    return records, summarize(records, counts, "real")


def summarize(records: list[dict], counts: dict[str, int], kind: str) -> dict:
    per_task = {}
    for task, n in counts.items():
        mine = [r for r in records if r["task"] == task]
        per_task[task] = {"requested": n, "generated": len(mine), "kept": sum(r["kept"] for r in mine),
                          "dropped": dict(Counter(r["reason"] for r in mine if not r["kept"]))}
    return {"kind": kind, "requested": sum(counts.values()), "generated": len(records),
            "kept": sum(r["kept"] for r in records),
            "dropped": dict(Counter(r["reason"] for r in records if not r["kept"])), "per_task": per_task}


def write(folder: Path, records: list[dict], report: dict) -> None:
    """replay.jsonl, then replay.json (each through a temporary file and a rename): a folder with
    replay.json holds the whole replay set, and a kill before it leaves none to trust."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in ((REPLAY_JSONL, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)),
                       (REPLAY_JSON, json.dumps(report, indent=1, ensure_ascii=False))):
        tmp = folder / f".{name}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(folder / name)


def exists(folder: Path) -> bool:
    return (folder / REPLAY_JSON).exists() and (folder / REPLAY_JSONL).exists()


def read(folder: Path) -> tuple[list[QAExample], dict]:
    """The kept examples of a stage's replay set, and its counts."""
    report = json.loads((folder / REPLAY_JSON).read_text(encoding="utf-8"))
    examples = []
    for n, line in enumerate((folder / REPLAY_JSONL).read_text(encoding="utf-8").splitlines(), 1):
        r = json.loads(line)
        if r["kept"]:
            examples.append(QAExample(r["task"], r["prompt"], [r["answer"]],
                                      r.get("where") or f"{folder / REPLAY_JSONL}:{n}"))
    return examples, report
