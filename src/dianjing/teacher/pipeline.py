"""Self-instruct in stages over a work folder, and the one-shot Alpaca-style mode.

    instructions ─► classify ─► instances ─► outputs ─► OUT (alpaca JSONL + provenance)
    (1) new tasks    yes / no    (2) inputs:   (3) the
    from seeds +                 input-first,  teacher's
    kept ones                    or labels →   answers
                                 inputs (output-first, classification)

Work folder (each file can be read while the run goes on):
    config.json         the settings that decide what is generated; a resumed run must match
    requests.jsonl      every teacher reply and failed attempt (store.Journal)
    commits.jsonl       which units are done and the committed size of every file (store.Ledger)
    instructions.jsonl  kept instructions: id, instruction, seed_ids, machine_ids, request_id, time
    classify.jsonl      is_classification per instruction
    instances.jsonl     inputs (input-first) or (label, input) pairs (output-first) per instruction
    rejected.jsonl      every rejected candidate: stage, reason, the text, the request
Stage (1) and the one-shot mode work in rounds: the requests of a round are built from the
kept pool as it was after the previous round and their replies are filtered in request order,
so a rerun rebuilds exactly the same prompts and finds their replies in the journal. Stages
(2), (3) and the classification work per instruction; each instruction is one committed unit.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable

from dianjing import __version__
from dianjing.errors import ConfigError, DianjingError
from dianjing.teacher import filters as F
from dianjing.teacher import prompts as P
from dianjing.teacher.client import RequestFailed, Teacher, make_teacher
from dianjing.teacher.dedup import Deduper
from dianjing.teacher.report import build_report, write_report
from dianjing.teacher.seeds import SeedTask, load_seeds, seeds_digest
from dianjing.teacher.settings import SynthConfig
from dianjing.teacher.store import Journal, Ledger

STAGES = ("instructions", "classify", "instances", "outputs")
CHOICES = (*STAGES, "all")


class StageFailed(DianjingError):
    """Teacher requests that failed after all retries; what was done is kept for the rerun."""


class _Progress:
    """A live line on a terminal, a plain line every 10 s elsewhere."""

    def __init__(self, label: str, total: int, done: int, log: Callable[[str], None]):
        self.label, self.total, self.start, self.log = label, total, done, log
        self.live = sys.stderr.isatty()
        self.t0 = self.last = time.monotonic()

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0
        line = (f"{self.label}: {done}/{self.total} {extra}  {rate * 60:.1f}/min  "
                f"eta {int(eta) // 60}:{int(eta) % 60:02d}")
        if self.live:
            sys.stderr.write("\r" + line + " " * 4)
            sys.stderr.flush()
        elif now - self.last > 10 or done >= self.total:
            self.last = now
            self.log(line)

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\n")


def _rej(stage: str, reason: str, source=None, /, **fields) -> dict:
    """A rejected.jsonl record; `source` is the reply it came from."""
    r = {"stage": stage, "reason": reason, **fields}
    if source is not None:
        r["request_id"] = source.key
    return r


async def _all(coros: list[Awaitable]) -> list:
    """Await all; then raise the first refusal, or one StageFailed naming every request that failed."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    failed = [r for r in results if isinstance(r, RequestFailed)]
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, RequestFailed):
            raise r
    if failed:
        raise RequestFailed(failed[0].name, failed[0].attempts, failed[0].cause,
                            failed[0].detail + (f"; {len(failed) - 1} more requests failed" if len(failed) > 1 else ""))
    return results


class Synth:
    """One `dianjing synth` run over a work folder."""

    def __init__(self, cfg: SynthConfig, log: Callable[[str], None]):
        self.cfg, self.log = cfg, log
        self.g, self.f = cfg.generate, cfg.filters
        self.api = cfg.teacher.api
        self.out, self.work, self.report_path = cfg.output.paths()
        self.seeds = load_seeds(self.g.seeds)
        self.checks = F.instruction_filters(self.f.min_instruction_tokens, self.f.max_instruction_tokens,
                                            tuple(self.f.extra_keywords))
        self.inst_checks = F.instance_filters(self.f.max_input_tokens, self.f.max_output_tokens)
        self.dup_reason = f"near-duplicate (ROUGE-L > {self.f.rouge_threshold:g})"
        self.state = {s: "not run" for s in (STAGES if self.g.mode == "self-instruct" else ("oneshot",))}

    # --- set-up -------------------------------------------------------------------------------

    def _open(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.work / "lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise DianjingError(f"another `dianjing synth` is writing to {self.work}",
                                fix="wait for it to finish, or give this run another --out") from None
        try:
            self._open_files()
        except BaseException:
            self._lock.close()
            raise

    def _open_files(self) -> None:
        ident = {**self.cfg.identity(), "seeds_digest": seeds_digest(self.seeds)}
        saved = self.work / "config.json"
        if saved.exists():
            old = json.loads(saved.read_text(encoding="utf-8"))
            diff = _diff(old, json.loads(json.dumps(ident)))
            if diff:
                raise ConfigError(f"{self.work} holds a run made with other settings: " + "; ".join(diff[:6]),
                                  fix=f"use the same settings to continue it, or another --out (or delete "
                                      f"{self.work} and {self.out}) to start a new one")
        else:
            if self.out.exists() and self.out.stat().st_size:
                raise DianjingError(f"{self.out} already exists and no run of dianjing synth wrote it (there is no "
                                    f"{saved})", fix="give another --out, or delete the file")
            saved.write_text(json.dumps(ident, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        self.journal = Journal(self.work / "requests.jsonl")
        files = {"rejected": self.work / "rejected.jsonl", "out": self.out}
        if self.g.mode == "self-instruct":
            files.update({n: self.work / f"{n}.jsonl" for n in ("instructions", "classify", "instances")})
        self.ledger = Ledger(self.work, files, log=self.log)
        self.teacher: Teacher = make_teacher(self.cfg.teacher, self.journal, self.log)

    def run(self, stage: str = "all") -> dict:
        """Run the stages up to `stage` (those already complete are skipped); returns the report."""
        if stage not in CHOICES:
            raise ConfigError(f"unknown stage {stage!r}; one of {', '.join(CHOICES)}")
        if self.g.mode == "alpaca" and stage != "all":
            raise ConfigError(f"--stage {stage}: the alpaca mode has one stage (instruction, input and output "
                              "in one request)", fix="leave --stage out, or use generate.mode=self-instruct")
        self._open()
        error = None
        try:
            asyncio.run(self._stages(stage))
        except RequestFailed as e:
            error = str(e)
            raise StageFailed(
                f"teacher request failed after {self.cfg.teacher.max_retries} retries: {e}",
                fix="everything finished so far is saved; run the same command again to continue (replies already "
                    "received are not requested again). If the teacher is overloaded, lower teacher.max_concurrency "
                    "or set teacher.tokens_per_minute; if it is slow, raise teacher.timeout_s") from None
        except BaseException as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            self.report = build_report(self.cfg, self.ledger, self.journal, self.teacher.stats,
                                       teacher_url=self.teacher.url, model=self.teacher.model, stages=self.state,
                                       out=self.out, error=error, endpoints=self.teacher.endpoint_stats())
            write_report(self.report_path, self.report)
            self.journal.close()
            self.ledger.close()
            self._lock.close()
        return self.report

    async def _stages(self, stage: str) -> None:
        try:
            if self.g.mode == "alpaca":
                await self._oneshot()
                return
            last = STAGES.index(stage) if stage in STAGES else len(STAGES) - 1
            for name in STAGES[: last + 1]:
                await getattr(self, f"_{name}")()
        finally:
            await self.teacher.aclose()

    # --- (1) instructions, in rounds ----------------------------------------------------------

    def _pool(self, kept_texts: list[str]) -> tuple[Deduper, list[str]]:
        dedup = Deduper(self.f.rouge_threshold)
        texts = [s.instruction for s in self.seeds] + kept_texts
        for t in texts:
            dedup.add(t)
        return dedup, texts

    def _rounds_done(self, prefix: str) -> int:
        return sum(1 for u in self.ledger.units if u.startswith(prefix + "/r"))

    async def _instructions(self) -> None:
        kept = self.ledger.rows("instructions")
        dedup, pool = self._pool([k["instruction"] for k in kept])
        rnd, idle, n = self._rounds_done("instructions"), 0, self.g.num_instructions
        progress = _Progress("instructions", n, len(kept), self.log)
        while len(kept) < n:
            n_req = min(self.g.requests_per_round, math.ceil((n - len(kept)) / self.g.new_per_request))
            plans = []
            for j in range(n_req):
                rng = random.Random(f"{self.g.seed}:instructions:{rnd}:{j}")
                seeds = rng.sample(self.seeds, min(self.g.seed_examples, len(self.seeds)))
                machine = rng.sample(kept, min(self.g.machine_examples, len(kept)))
                examples = [s.instruction for s in seeds] + [m["instruction"] for m in machine]
                prompt = P.instructions_prompt(examples, self.g.new_per_request, self.api)
                plans.append((f"instructions/r{rnd}/q{j}", prompt, [s.id for s in seeds], [m["id"] for m in machine],
                              len(examples) + 1))
            replies = await _all([self.teacher.ask(name, prompt) for name, prompt, *_ in plans])
            new, rejected = [], []
            for (_, _, seed_ids, machine_ids, first), reply in zip(plans, replies):
                parsed = P.parse_instructions(reply.text, first, self.api, reply.finish_reason == "length")
                if parsed is None:
                    rejected.append(_rej("instructions", "unparseable reply", reply, reply=reply.text[:2000]))
                    continue
                cands, cut = parsed
                if cut is not None:
                    rejected.append(_rej("instructions", "cut off at max_tokens", reply, instruction=cut))
                for text in cands:
                    why, similar = F.first_reason(text, self.checks), None
                    if why is None and (hit := dedup.find(text)) is not None:
                        why, similar = self.dup_reason, pool[hit.index]
                    if why is None and len(kept) + len(new) >= n:
                        why = "surplus: num_instructions reached"
                    if why:
                        rejected.append(_rej("instructions", why, reply, instruction=text,
                                             **({"similar_to": similar} if similar else {})))
                        continue
                    dedup.add(text)
                    pool.append(text)
                    new.append({"id": f"i{len(kept) + len(new):06d}", "instruction": text, "round": rnd,
                                "seed_ids": seed_ids, "machine_ids": machine_ids, "request_id": reply.key,
                                "time": reply.time})
            self.ledger.commit(f"instructions/r{rnd}", {"instructions": new, "rejected": rejected})
            kept += new
            rnd += 1
            idle = 0 if new else idle + 1
            progress.update(len(kept), f"kept (round {rnd}: +{len(new)}, {len(rejected)} rejected)")
            if idle >= self.g.max_idle_rounds:
                raise DianjingError(f"{idle} rounds in a row kept no instruction ({len(kept)}/{n} kept); the last "
                                    f"round's rejections: {_reasons(rejected)}",
                                    fix="look at rejected.jsonl in the work folder; a stronger teacher, a higher "
                                        "teacher.temperature or filters.rouge_threshold may help")
        progress.close()
        self.state["instructions"] = "done"

    # --- per-instruction stages ---------------------------------------------------------------

    async def _per_unit(self, stage: str, items: list[dict], work: Callable[[dict], Awaitable[dict]]) -> None:
        pending = [it for it in items if f"{stage}/{it['id']}" not in self.ledger.done]
        progress = _Progress(stage, len(items), len(items) - len(pending), self.log)
        done, failures = len(items) - len(pending), []
        queue = iter(pending)
        width = self.teacher.capacity  # max_concurrency per endpoint; a local teacher: 1

        async def worker() -> None:
            nonlocal done
            for it in queue:
                if failures:
                    return
                try:
                    lines = await work(it)
                except RequestFailed as e:
                    failures.append(e)
                    return
                self.ledger.commit(f"{stage}/{it['id']}", lines)
                done += 1
                progress.update(done)

        workers = [asyncio.create_task(worker()) for _ in range(width)]
        try:
            await asyncio.gather(*workers)
        except BaseException:  # a refusal: stop the other workers before the client closes
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        progress.close()
        if failures:
            raise failures[0]
        self.state[stage] = "done"

    async def _classify(self) -> None:
        instr = self.ledger.rows("instructions")
        rng = random.Random(f"{self.g.seed}:classify")
        yes = [s for s in self.seeds if s.is_classification]
        no = [s for s in self.seeds if not s.is_classification]
        demos = rng.sample(yes, min(6, len(yes))) + rng.sample(no, min(6, len(no)))
        rng.shuffle(demos)

        async def work(it: dict) -> dict:
            prompt = P.classify_prompt(it["instruction"], demos, self.api)
            reply = await self.teacher.ask(f"classify/{it['id']}", prompt)
            verdict = P.parse_yes_no(reply.text)
            if verdict is None:
                return {"rejected": [_rej("classify", "unparseable reply", reply, id=it["id"],
                                          instruction=it["instruction"], reply=reply.text[:2000])]}
            return {"classify": [{"id": it["id"], "is_classification": verdict, "request_id": reply.key}]}

        await self._per_unit("classify", instr, work)

    def _demos(self, key: str, classification: bool) -> list[SeedTask]:
        same = [s for s in self.seeds if s.is_classification == classification] or self.seeds
        return random.Random(f"{self.g.seed}:{key}").sample(same, min(self.g.instance_demos, len(same)))

    async def _instances(self) -> None:
        verdicts = {r["id"]: r for r in self.ledger.rows("classify")}
        items = [dict(it, classify=verdicts[it["id"]]) for it in self.ledger.rows("instructions")
                 if it["id"] in verdicts]

        async def work(it: dict) -> dict:
            cls = it["classify"]["is_classification"]
            demos = self._demos(f"instances:{it['id']}", cls)
            name = f"instances/{it['id']}"
            rejected, instances = [], []
            if cls:
                reply = await self.teacher.ask(name, P.labels_prompt(it["instruction"], demos, self.api))
                parsed = P.parse_labelled(reply.text, self.api)
                pairs = [(x, y) for x, y in parsed] if parsed else None
            else:
                reply = await self.teacher.ask(name, P.inputs_prompt(it["instruction"], demos,
                                                                     self.g.instances_per_task, self.api))
                parsed = P.parse_inputs(reply.text, self.api)
                pairs = [(x, None) for x in parsed] if parsed else None
            base = {"id": it["id"], "instruction": it["instruction"]}
            if pairs is None:
                return {"instances": [], "rejected": [_rej("instances", "unparseable reply", reply, **base,
                                                           reply=reply.text[:2000])]}
            if reply.finish_reason == "length" and len(pairs) > 1:
                x, y = pairs.pop()
                rejected.append(_rej("instances", "cut off at max_tokens", reply, **base, input=x))
            seen = set()
            for x, y in pairs:
                key = " ".join(x.split())
                why = None
                if F.too_long(x, self.f.max_input_tokens):
                    why = "input too long"
                elif not cls and key in seen:
                    why = "duplicate input"
                elif not cls and len(instances) >= self.g.instances_per_task:
                    why = "more inputs than asked for"
                if why:
                    rejected.append(_rej("instances", why, reply, **base, input=x))
                    continue
                seen.add(key)
                instances.append({"input": x, "output": y})
            rec = {**base, "is_classification": cls, "method": "output-first" if cls else "input-first",
                   "instances": instances, "seed_ids": [d.id for d in demos], "request_id": reply.key,
                   "time": reply.time}
            return {"instances": [rec], "rejected": rejected}

        await self._per_unit("instances", items, work)

    async def _outputs(self) -> None:
        instr = {r["id"]: r for r in self.ledger.rows("instructions")}
        tasks = self.ledger.rows("instances")

        async def work(task: dict) -> dict:
            todo = [(k, x) for k, x in enumerate(task["instances"]) if x["output"] is None]
            replies = await _all([self.teacher.ask(f"outputs/{task['id']}/{k}",
                                                   P.output_prompt(task["instruction"], x["input"], self.api))
                                  for k, x in todo])
            by_k = dict(zip((k for k, _ in todo), replies))
            return self._assemble(task, instr[task["id"]], by_k)

        await self._per_unit("outputs", tasks, work)

    def _assemble(self, task: dict, instruction: dict, replies: dict) -> dict:
        """Instance filters over one task's examples; the kept ones become alpaca records."""
        rows = []
        for k, x in enumerate(task["instances"]):
            reply = replies.get(k)  # None: output-first, the output came with the input
            out = x["output"] if reply is None else reply.text.strip()
            why = "cut off at max_tokens" if reply is not None and reply.finish_reason == "length" else None
            why = why or next((r for check in self.inst_checks if (r := check(x["input"], out))), None)
            rows.append([x["input"], out, reply, why])
        alive = [r for r in rows if r[3] is None]
        for r, why in zip(alive, F.conflicts([(r[0], r[1]) for r in alive])):
            r[3] = why
        seed_ids = list(dict.fromkeys(instruction["seed_ids"] + task["seed_ids"]))
        kept, rejected = [], []
        for inp, out, reply, why in rows:
            key = reply.key if reply is not None else task["request_id"]
            if why:
                rejected.append({"stage": "outputs", "reason": why, "request_id": key, "id": task["id"],
                                 "instruction": task["instruction"], "input": inp, "output": out})
                continue
            requests = {"instruction": instruction["request_id"], "instances": task["request_id"]}
            if reply is not None:
                requests["output"] = reply.key
            kept.append({"instruction": task["instruction"], "input": inp, "output": out,
                         "provenance": self._provenance(
                             stage="outputs" if reply is not None else "instances",
                             time=reply.time if reply is not None else task["time"], request_id=key,
                             seed_ids=seed_ids, task_id=task["id"], method=task["method"],
                             machine_ids=instruction["machine_ids"], requests=requests)})
        return {"out": kept, "rejected": rejected}

    def _provenance(self, **fields) -> dict:
        t = self.cfg.teacher
        return {"teacher_url": self.teacher.url, "model": self.teacher.model, "terms_of_use": t.terms_of_use,
                "pipeline": self.g.mode, "generator": f"dianjing {__version__}", **fields}

    # --- one-shot, Alpaca-style ---------------------------------------------------------------

    async def _oneshot(self) -> None:
        kept = self.ledger.rows("out")
        dedup, pool = self._pool([k["instruction"] for k in kept])
        rnd, idle, n = self._rounds_done("oneshot"), 0, self.g.num_instructions
        count = len(kept)
        progress = _Progress("examples", n, count, self.log)
        while count < n:
            n_req = min(self.g.requests_per_round, math.ceil((n - count) / self.g.new_per_request))
            plans = []
            for j in range(n_req):
                rng = random.Random(f"{self.g.seed}:oneshot:{rnd}:{j}")
                demos = rng.sample(self.seeds, min(3, len(self.seeds)))
                plans.append((f"oneshot/r{rnd}/q{j}", P.oneshot_prompt(demos, self.g.new_per_request, self.api),
                              [d.id for d in demos]))
            replies = await _all([self.teacher.ask(name, prompt) for name, prompt, _ in plans])
            new, rejected = [], []
            for (_, _, seed_ids), reply in zip(plans, replies):
                blocks = P.parse_oneshot(reply.text, self.api)
                if blocks is None:
                    rejected.append(_rej("oneshot", "unparseable reply", reply, reply=reply.text[:2000]))
                    continue
                if reply.finish_reason == "length":
                    last = blocks.pop()
                    rejected.append(_rej("oneshot", "cut off at max_tokens", reply, **(last or {})))
                for b in blocks:
                    if b is None:
                        rejected.append(_rej("oneshot", "unparseable task block", reply))
                        continue
                    why, similar = F.first_reason(b["instruction"], self.checks), None
                    why = why or next((r for c in self.inst_checks if (r := c(b["input"], b["output"]))), None)
                    if why is None and (hit := dedup.find(b["instruction"])) is not None:
                        why, similar = self.dup_reason, pool[hit.index]
                    if why is None and count + len(new) >= n:
                        why = "surplus: num_instructions reached"
                    if why:
                        extra = {"similar_to": similar} if similar else {}
                        rejected.append(_rej("oneshot", why, reply, **b, **extra))
                        continue
                    dedup.add(b["instruction"])
                    pool.append(b["instruction"])
                    new.append({**b, "provenance": self._provenance(
                        stage="oneshot", time=reply.time, request_id=reply.key, seed_ids=seed_ids,
                        task_id=f"r{rnd}-{len(new)}")})
            self.ledger.commit(f"oneshot/r{rnd}", {"out": new, "rejected": rejected})
            count += len(new)
            rnd += 1
            idle = 0 if new else idle + 1
            progress.update(count, f"kept (round {rnd}: +{len(new)}, {len(rejected)} rejected)")
            if idle >= self.g.max_idle_rounds:
                raise DianjingError(f"{idle} rounds in a row kept no example ({count}/{n}); the last round's "
                                    f"rejections: {_reasons(rejected)}",
                                    fix="look at rejected.jsonl in the work folder")
        progress.close()
        self.state["oneshot"] = "done"


def _reasons(rejected: list[dict]) -> str:
    from collections import Counter

    return ", ".join(f"{why} ×{k}" for why, k in Counter(r["reason"] for r in rejected).most_common(4)) or "none"


def _diff(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if old == new else [f"{path}: {old!r} then, {new!r} now"]
