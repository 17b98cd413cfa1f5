"""Mixture → training file: task selection with the held-out leak check, capped or temperature
mixing, template policy, few-shot, and the report of what each task and template contributed.

Mixing works on datasets (FLAN's unit): a dataset counts with min(size, cap) examples
(proportional) or min(size, cap)^(1/T) (temperature), and its share is split among its tasks
by their sizes. Each task's records are taken in a seeded order; when a task must give more
examples than it has records, it starts over and every record gets the next template.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from dianjing.data.bad_records import BadRecords, Tally, reason_of
from dianjing.errors import ConfigError, DataError
from dianjing.generalist.registry import (T0_PREFIX, Mixture, Registry, Task, Template, load_registries,
                                          t0_dir_for)
from dianjing.generalist.templates import CompiledTask, Example


# --------------------------------------------------------------------------- reading task data

SKIP_HINT = "set on_error: skip in the mixture (skipped records are counted in the report)"


@dataclass
class TaskData:
    """A task's records, turned into template variables, with every dropped record counted."""

    task: Task
    compiled: CompiledTask
    source: Path
    bad: BadRecords  # the mixture's on_error, and the records dropped under it
    records: list[tuple[dict, str]] = field(default_factory=list)  # (variables, "file:line")

    @property
    def dropped(self) -> Counter:
        """reason -> records of this task that could not be used (on_error: skip)."""
        return self.bad.counts


def source_path(task: Task, reg: Registry, mix: Mixture | None) -> Path:
    if task.source.startswith(T0_PREFIX):
        return t0_dir_for(mix, reg) / (task.source[len(T0_PREFIX):] + ".jsonl")
    p = Path(task.source).expanduser()
    if not p.is_absolute():
        p = (reg.base_dir or Path.cwd()) / p
    return p


def _raw_records(task: Task, path: Path, on_error: str, errors: list):
    from dianjing.data import readers

    if task.source.startswith(T0_PREFIX):
        from dianjing.generalist.t0 import read_t0

        yield from read_t0(path, on_error, errors)
        return
    if not path.is_file():
        raise ConfigError(f"task '{task.name}': source {path} does not exist",
                          fix="paths in a registry are relative to the registry file")
    fmt = task.format
    if fmt == "auto":
        yield from readers.read_records(str(path), on_error, errors)
    elif fmt == "jsonl":
        yield from readers.read_jsonl(path, on_error, errors)
    elif fmt == "json":
        yield from readers.read_json(path)
    else:
        yield from readers.read_csv(path)


def load_task_data(task: Task, reg: Registry, mix: Mixture | None, on_error: str = "skip") -> TaskData:
    path = source_path(task, reg, mix)
    td = TaskData(task, CompiledTask(task), path, BadRecords(on_error, skip_hint=SKIP_HINT))
    errors: list[DataError] = []
    for rec in _raw_records(task, path, on_error, errors):
        try:
            if not isinstance(rec.data, dict):
                raise DataError(f"expected an object, got {type(rec.data).__name__}", file=rec.where)
            td.records.append((td.compiled.variables(rec.data, rec.where), rec.where))
        except DataError as e:
            td.bad.handle(e)
    for e in errors:  # lines the reader itself could not parse (on_error: skip)
        td.bad.handle(e)
    return td


# --------------------------------------------------------------------------- selection and leak check


@dataclass
class Plan:
    train: list[Task]
    held_out: dict[str, list[Task]]  # cluster -> its tasks
    registry_of: dict[str, Registry]  # task name -> registry

    @property
    def held_out_datasets(self) -> dict[str, str]:
        """dataset id -> held-out cluster."""
        return {t.dataset_id: c for c, ts in self.held_out.items() for t in ts}


def plan(mix: Mixture, regs: list[Registry]) -> Plan:
    """Which tasks are trained on and which are held out; raises ConfigError if a held-out dataset
    (any of its tasks or templates) or a held-out task's source file would be trained on."""
    tasks: dict[str, Task] = {}
    registry_of: dict[str, Registry] = {}
    for r in regs:
        for t in r.tasks:
            tasks[t.name], registry_of[t.name] = t, r
    clusters = sorted({t.cluster for t in tasks.values()})
    for c in mix.held_out:
        if c not in clusters:
            raise ConfigError(f"held_out: no task is in cluster '{c}'", fix=f"clusters: {', '.join(clusters)}")
    for c in mix.include.clusters or []:
        if c not in clusters:
            raise ConfigError(f"include.clusters: unknown cluster '{c}'", fix=f"clusters: {', '.join(clusters)}")
    for n in [*(mix.include.tasks or []), *mix.exclude_tasks]:
        if n not in tasks:
            near = sorted(t for t in tasks if n.split("_")[0] in t)[:8]
            raise ConfigError(f"unknown task '{n}' in include.tasks/exclude_tasks",
                              fix=f"similar names: {', '.join(near)}" if near else "see the registry's task names")
    held = set(mix.held_out)
    held_out = {c: [t for t in tasks.values() if t.cluster == c] for c in mix.held_out}
    if mix.include.clusters is None and mix.include.tasks is None:
        chosen = [t for t in tasks.values() if t.cluster not in held]
    else:
        want = set(mix.include.clusters or [])
        chosen = [t for t in tasks.values() if t.cluster in want]
        chosen += [tasks[n] for n in mix.include.tasks or [] if tasks[n] not in chosen]
    chosen = [t for t in chosen if t.name not in set(mix.exclude_tasks)]
    held_datasets = {t.dataset_id: t for ts in held_out.values() for t in ts}
    held_sources = {source_path(t, registry_of[t.name], mix).resolve(): t for ts in held_out.values() for t in ts}
    fix = "remove it from include, or list it in exclude_tasks"
    for t in chosen:
        if t.cluster in held:
            raise ConfigError(f"task '{t.name}' (dataset '{t.dataset_id}') is in held-out cluster '{t.cluster}' "
                              "but the mixture would train on it", fix=fix)
        if t.dataset_id in held_datasets:
            h = held_datasets[t.dataset_id]
            raise ConfigError(f"task '{t.name}' would put dataset '{t.dataset_id}' into training, but that dataset "
                              f"is held out (task '{h.name}', cluster '{h.cluster}')", fix=fix)
        src = source_path(t, registry_of[t.name], mix).resolve()
        if src in held_sources:
            h = held_sources[src]
            raise ConfigError(f"task '{t.name}' (dataset '{t.dataset_id}') reads {src}, the source of held-out "
                              f"task '{h.name}' (dataset '{h.dataset_id}', cluster '{h.cluster}')", fix=fix)
    if not chosen:
        raise ConfigError("the mixture selects no task to train on",
                          fix="check include.clusters / include.tasks against held_out")
    return Plan(chosen, held_out, registry_of)


# --------------------------------------------------------------------------- mixing


def _largest_remainder(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Integers proportional to `weights` that sum to `total` (ties broken by key order)."""
    wsum = sum(weights.values())
    if wsum <= 0:
        return {k: 0 for k in weights}
    exact = {k: total * w / wsum for k, w in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    rest = total - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:rest]:
        out[k] += 1
    return out


def mixing_counts(sizes: dict[str, int], dataset_of: dict[str, str], mix: Mixture) -> tuple[dict[str, int], dict]:
    """Examples per task from the tasks' sizes; returns (counts, per-dataset mixing facts)."""
    m = mix.mixing
    by_ds: dict[str, list[str]] = defaultdict(list)
    for t, d in dataset_of.items():
        by_ds[d].append(t)
    n_ds = {d: sum(sizes[t] for t in ts) for d, ts in by_ds.items()}
    capped = {d: min(n, m.cap) for d, n in n_ds.items()}
    if m.method == "proportional":
        weights = {d: float(c) for d, c in capped.items()}
    else:
        weights = {d: float(c) ** (1.0 / m.temperature) if c else 0.0 for d, c in capped.items()}
    total = m.total if m.total is not None else sum(capped.values())
    ds_counts = _largest_remainder(total, weights)
    counts: dict[str, int] = {}
    for d, ts in by_ds.items():
        counts.update(_largest_remainder(ds_counts[d], {t: float(sizes[t]) for t in ts}))
    wsum = sum(weights.values()) or 1.0
    facts = {d: {"available": n_ds[d], "capped": n_ds[d] > m.cap, "counted_as": capped[d],
                 "rate": round(weights[d] / wsum, 6), "examples": ds_counts[d]} for d in sorted(by_ds)}
    return counts, facts


def template_pool(task: Task, mix: Mixture) -> list[Template]:
    pol = mix.templates
    return [t for t in task.templates
            if (pol.turned_around or not t.turned_around) and (pol.chain_of_thought or not t.chain_of_thought)]


def renderable(td: TaskData, mix: Mixture, skipped: Tally) -> list[list[Example]]:
    """Per record, its zero-shot renderings with each template of the pool that works and fits
    max_chars; failures stop (on_error: stop) or are counted in `skipped` (a record none of whose
    templates fit is not used)."""
    pool = template_pool(td.task, mix)
    failed = BadRecords(mix.on_error, tally=skipped, skip_hint=SKIP_HINT)
    out = []
    for variables, where in td.records:
        fits = []
        for tmpl in pool:
            if tmpl.chain_of_thought and not td.compiled.has_rationale(variables):
                continue  # not an error: chain-of-thought templates are for the records that have rationales
            try:
                ex = td.compiled.render(tmpl, variables, where, options_suffix=mix.templates.options_suffix)
            except DataError as e:
                failed.handle(e, reason=f"template '{tmpl.name}': {reason_of(e)}")
                continue
            if mix.max_chars and len(ex.prompt) + len(ex.target) > mix.max_chars:
                skipped.add(f"template '{tmpl.name}': longer than max_chars={mix.max_chars}", where)
                continue
            fits.append(ex)
        out.append(fits)
    return out


def task_examples(td: TaskData, renders: list[list[Example]], count: int, mix: Mixture, rng: random.Random,
                  skipped: Tally) -> list[Example]:
    """`count` training examples from one task's renderable records (see `renderable`)."""
    usable = [i for i, r in enumerate(renders) if r]
    out: list[Example] = []
    if not usable or not count:
        return out
    order = list(usable)
    rng.shuffle(order)
    n = len(order)
    k, ratio = mix.few_shot.k, mix.few_shot.ratio
    for j in range(count):
        i, lap = order[j % n], j // n
        cands = renders[i]
        if mix.templates.policy == "round_robin":
            ex = cands[(j + lap) % len(cands)]
        else:
            ex = rng.choice(cands)
        if k and rng.random() < ratio:
            same = [x for x in usable if x != i and any(e.template == ex.template for e in renders[x])]
            if len(same) < k:
                skipped.add("few-shot: too few exemplars with this template, zero-shot instead", td.records[i][1])
            else:
                tmpl = next(t for t in td.task.templates if t.name == ex.template)
                shots = [td.records[x][0] for x in rng.sample(same, k)]
                few = td.compiled.render(tmpl, td.records[i][0], td.records[i][1],
                                         options_suffix=mix.templates.options_suffix, exemplars=shots)
                if mix.max_chars and len(few.prompt) + len(few.target) > mix.max_chars:
                    skipped.add("few-shot: longer than max_chars, zero-shot instead", td.records[i][1])
                else:
                    ex = few
        out.append(ex)
    return out


@dataclass
class MixResult:
    examples: list[Example]
    report: dict


def build_mixture(mix: Mixture, log=print) -> MixResult:
    """Select, leak-check, load, mix and render; the examples come out shuffled with the mixture's seed."""
    regs = load_registries(mix, log=log)
    p = plan(mix, regs)
    rng = random.Random(mix.seed)
    data: dict[str, TaskData] = {}
    renders: dict[str, list[list[Example]]] = {}
    skipped: dict[str, Tally] = {}
    for t in p.train:
        td = data[t.name] = load_task_data(t, p.registry_of[t.name], mix, mix.on_error)
        skipped[t.name] = Tally()
        renders[t.name] = renderable(td, mix, skipped[t.name])
    sizes = {n: sum(1 for r in renders[n] if r) for n in data}
    unusable = sorted(n for n, k in sizes.items() if not k)
    if unusable:
        log(f"{len(unusable)} tasks have no record that renders within the limits and give nothing: "
            + ", ".join(unusable[:12]) + (" …" if len(unusable) > 12 else "") + " (see the report)")
    counts, ds_facts = mixing_counts(sizes, {n: td.task.dataset_id for n, td in data.items()}, mix)
    examples: list[Example] = []
    per_task: dict[str, dict] = {}
    for name in sorted(data):
        td = data[name]
        exs = task_examples(td, renders[name], counts[name], mix, rng, skipped[name])
        examples += exs
        per_task[name] = {
            "dataset": td.task.dataset_id, "cluster": td.task.cluster, "source": str(td.source),
            "records": len(td.records) + sum(td.dropped.values()), "usable": sizes[name],
            "examples": len(exs), "repeats": max(0, len(exs) - sizes[name]),
            "templates": dict(sorted(Counter(e.template for e in exs).items())),
            "few_shot": sum(1 for e in exs if e.shots),
            "dropped_records": dict(td.dropped), "skipped": dict(skipped[name].counts),
        }
        if td.dropped:
            log(f"{name}: {td.bad.summary()}")
    rng.shuffle(examples)
    report = {
        "mixture": mix.origin, "seed": mix.seed, "registries": [r.origin for r in regs],
        "mixing": mix.mixing.model_dump(), "templates": mix.templates.model_dump(),
        "few_shot": mix.few_shot.model_dump(), "max_chars": mix.max_chars, "output_format": mix.output_format,
        "total": len(examples),
        "held_out": {c: sorted(t.name for t in ts) for c, ts in p.held_out.items()},
        "held_out_datasets": sorted(p.held_out_datasets),
        "clusters": dict(sorted(Counter(e.cluster for e in examples).items())),
        "datasets": ds_facts,
        "caps_applied": sorted(d for d, f in ds_facts.items() if f["capped"]),
        "tasks": per_task,
        "template_totals": dict(sorted(Counter(f"{e.task}/{e.template}" for e in examples).items())),
        "turned_around": sum(1 for e in examples if e.turned_around),
        "few_shot_examples": sum(1 for e in examples if e.shots),
    }
    return MixResult(examples, report)


def write_mixture(result: MixResult, out: str | Path, fmt: str = "prompt_completion") -> tuple[Path, Path]:
    """Write FILE (JSONL that `dianjing train --data FILE` reads) and FILE.report.json."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for ex in result.examples:
            fh.write(json.dumps(ex.record(fmt), ensure_ascii=False) + "\n")
    rep = out.with_name(out.name + ".report.json")
    rep.write_text(json.dumps(result.report, indent=1, ensure_ascii=False), encoding="utf-8")
    return out, rep


# --------------------------------------------------------------------------- held-out split


def heldout_split(td: TaskData, max_n: int, reserve: int, seed: int) -> tuple[list[int], list[int]]:
    """(eval indices, exemplar indices) of a held-out task's records.

    The order is seeded by the dataset id and the record count, so the T0 files of one dataset
    (the same rows under different templates) are scored on the same rows.
    """
    n = len(td.records)
    order = list(range(n))
    random.Random(f"{seed}:{td.task.dataset_id}:{n}").shuffle(order)
    take = min(max_n, max(0, n - reserve)) if reserve else min(max_n, n)
    return order[:take], order[take:]
