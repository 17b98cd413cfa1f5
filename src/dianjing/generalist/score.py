"""Held-out evaluation: score a model on the clusters a mixture kept out of training.

Per held-out task × template:
* tasks with answer options: **accuracy by option log-likelihood** — the sum of the token
  log-probabilities of each option given the prompt (rendered with the model's chat template,
  exactly as training renders it), the highest wins; also the per-token (length-normalised)
  variant — and **exact match of greedily generated text** (a few tokens);
* generative tasks: ROUGE-L (rouge_l), SQuAD EM/F1 (squad_f1) or EM (exact_match) of the
  greedy generation, against the rendered target or the task's answer_field. The metrics and
  their tokens are dianjing.eval's, the same as the teacher's de-duplication and the specialists'.

Each prompt is run through the model once: its KV cache serves both the option continuations
(copied, one row per option) and the greedy generation.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import Counter, defaultdict

import torch

from dianjing.errors import DataError
from dianjing.eval.likelihood import answer_prefix, option_logprobs  # noqa: F401  (defined once, in eval/)
from dianjing.eval.likelihood import fit_prompt as _fit
from dianjing.eval.metrics import qa_exact, qa_f1, rouge_l
from dianjing.generalist.mix import heldout_split, load_task_data, plan
from dianjing.generalist.registry import Mixture, load_registries
from dianjing.generalist.templates import Example

# --------------------------------------------------------------------------- which examples


def heldout_examples(mix: Mixture, *, per_task: int | None = None, shots: int | None = None,
                     log=print) -> list[dict]:
    """The rendered held-out examples, one group per (task, template), with what was dropped."""
    regs = load_registries(mix, log=log)
    p = plan(mix, regs)
    per_task = per_task or mix.eval.max_per_task
    k = mix.eval.shots if shots is None else shots
    groups = []
    for cluster, tasks in p.held_out.items():
        pairs_by_ds: dict[str, list] = defaultdict(list)
        for t in tasks:
            for tmpl in t.templates:
                if not tmpl.turned_around and not tmpl.chain_of_thought:
                    pairs_by_ds[t.dataset_id].append((t, tmpl))
        for ds, pairs in sorted(pairs_by_ds.items()):
            pairs.sort(key=lambda x: (x[0].name, x[1].name))
            lim = mix.eval.templates_per_dataset
            if lim and len(pairs) > lim:
                pairs = sorted(random.Random(f"{mix.seed}:templates:{ds}").sample(pairs, lim),
                               key=lambda x: (x[0].name, x[1].name))
            loaded = {}
            for task, tmpl in pairs:
                if task.name not in loaded:
                    loaded[task.name] = load_task_data(task, p.registry_of[task.name], mix, "skip")
                td = loaded[task.name]
                idx, pool = heldout_split(td, per_task, k, mix.seed)
                dropped = Counter(td.dropped)
                exs: list[Example] = []
                for i in idx:
                    variables, where = td.records[i]
                    exemplars = []
                    if k:
                        rng = random.Random(f"{mix.seed}:shots:{task.name}:{i}")
                        exemplars = [td.records[x][0] for x in rng.sample(pool, min(k, len(pool)))]
                    try:
                        ex = td.compiled.render(tmpl, variables, where, options_suffix=mix.templates.options_suffix,
                                                exemplars=exemplars)
                    except DataError as e:
                        dropped[e.message.split("\n")[0][:80]] += 1
                        continue
                    if ex.options is not None and ex.target not in ex.options:
                        dropped["target not among the options"] += 1
                        continue
                    exs.append(ex)
                groups.append({"cluster": cluster, "dataset": ds, "task": task.name, "template": tmpl.name,
                               "metric": "accuracy" if exs and exs[0].options else task.metric,
                               "examples": exs, "dropped": dict(dropped)})
    return groups


# --------------------------------------------------------------------------- the model side


def greedy(model, tokenizer, batch, logits: torch.Tensor, max_new_tokens: int, stops: tuple[str, ...]) -> list[str]:
    """Greedy continuation of every row of a prefilled batch (consumes `batch`)."""
    from dianjing.infer.generate import SamplingParams, continue_batch

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    return [o.strip() for o in continue_batch(model, tokenizer, batch, logits, params, stops)]


def score_group(model, tokenizer, chat, exs: list[Example], *, batch_size: int = 8, generate: bool = True,
                max_new_tokens: int = 64, max_prompt_tokens: int | None = 512) -> tuple[list[dict], int]:
    """Predictions for one group of examples (chosen option by summed and by per-token log-likelihood,
    generated text), and how many prompts had to be cut to max_prompt_tokens."""
    from dianjing.infer.generate import prefill

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    prefix = answer_prefix(chat)
    stops = tuple(chat.stop_strings)
    prompts, cut = [], 0
    for ex in exs:
        text = chat.render([{"role": "user", "content": ex.prompt}], add_generation_prompt=True)
        ids, was_cut = _fit(tokenizer(text, add_special_tokens=False)["input_ids"], max_prompt_tokens)
        prompts.append(ids)
        cut += was_cut
    order = sorted(range(len(exs)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    preds: list[dict] = [{} for _ in exs]
    for s in range(0, len(order), batch_size):
        ids_ = order[s:s + batch_size]
        batch, last = prefill(model, [prompts[i] for i in ids_], pad)
        has_opts = [exs[i].options for i in ids_]
        if any(has_opts):
            conts = [[tokenizer(prefix + o, add_special_tokens=False)["input_ids"] or [pad] for o in (exs[i].options or [])]
                     for i in ids_]
            lps = option_logprobs(model, batch, last, conts, pad)
            for i, lp in zip(ids_, lps):
                if not lp:
                    continue
                sums = [sum(x) for x in lp]
                means = [sum(x) / len(x) for x in lp]
                preds[i]["option"] = exs[i].options[max(range(len(sums)), key=sums.__getitem__)]
                preds[i]["option_norm"] = exs[i].options[max(range(len(means)), key=means.__getitem__)]
                preds[i]["option_logprobs"] = [round(x, 4) for x in sums]
        if generate:
            n_new = max_new_tokens
            if all(has_opts):  # classification: a few tokens past the longest option
                longest = max(len(c) for cs in conts for c in cs)
                n_new = min(max_new_tokens, longest + 3)
            for i, g in zip(ids_, greedy(model, tokenizer, batch, last, n_new, stops)):
                preds[i]["generated"] = g
    return preds, cut


def _summary(vals: list[float]) -> dict:
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals),
            "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0, "templates": len(vals)}


def group_scores(group: dict, preds: list[dict]) -> dict:
    exs: list[Example] = group["examples"]
    n = len(exs)
    row = {k: group[k] for k in ("cluster", "dataset", "task", "template", "metric")}
    row["n"] = n
    if not n:
        return row
    if exs[0].options:
        row["accuracy"] = sum(p.get("option") == e.target for p, e in zip(preds, exs)) / n
        row["accuracy_norm"] = sum(p.get("option_norm") == e.target for p, e in zip(preds, exs)) / n
        row["majority"] = Counter(e.target for e in exs).most_common(1)[0][1] / n
        row["chance"] = sum(1 / len(e.options) for e in exs) / n
    if any("generated" in p for p in preds):
        gens = [p.get("generated", "") for p in preds]
        row["exact_match"] = sum(max(qa_exact(g, r) for r in e.references) for g, e in zip(gens, exs)) / n
        if group["metric"] == "rouge_l":
            row["rouge_l"] = sum(max(rouge_l(g, r) for r in e.references) for g, e in zip(gens, exs)) / n
        elif group["metric"] == "squad_f1":
            row["f1"] = sum(max(qa_f1(g, r) for r in e.references) for g, e in zip(gens, exs)) / n
    row["primary"] = {"accuracy": "accuracy", "rouge_l": "rouge_l", "squad_f1": "f1",
                      "exact_match": "exact_match"}[group["metric"]]
    return row


METRIC_KEYS = ("accuracy", "accuracy_norm", "exact_match", "rouge_l", "f1", "majority")


def aggregate(rows: list[dict]) -> tuple[dict, dict]:
    """Per dataset: mean/min/max/std over its templates; per cluster: mean of the dataset means and
    the spread over all of its (dataset, template) rows."""
    by_ds: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["n"]:
            by_ds[(r["cluster"], r["dataset"])].append(r)
    datasets = {}
    for (c, d), rs in sorted(by_ds.items()):
        datasets[d] = {"cluster": c, "n": sum(r["n"] for r in rs)}
        for k in METRIC_KEYS:
            vals = [r[k] for r in rs if k in r]
            if vals:
                datasets[d][k] = _summary(vals)
    clusters = {}
    for c in sorted({r["cluster"] for r in rows}):
        ds = {d: v for d, v in datasets.items() if v["cluster"] == c}
        crow = {"datasets": sorted(ds), "n": sum(v["n"] for v in ds.values())}
        for k in METRIC_KEYS:
            means = [v[k]["mean"] for v in ds.values() if k in v]
            vals = [r[k] for r in rows if r["cluster"] == c and k in r and r["n"]]
            if means:
                crow[k] = {"mean": sum(means) / len(means), "min": min(vals), "max": max(vals),
                           "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0, "templates": len(vals)}
        clusters[c] = crow
    return datasets, clusters


def evaluate_heldout(model, tokenizer, chat, mix: Mixture, *, per_task: int | None = None, shots: int | None = None,
                     batch_size: int = 8, generate: bool = True, max_new_tokens: int = 64,
                     max_prompt_tokens: int | None = 512, log=print) -> dict:
    """Score every held-out (task, template) group; returns rows, per-dataset and per-cluster summaries."""
    if not mix.held_out:
        from dianjing.errors import ConfigError

        raise ConfigError(f"{mix.origin}: held_out names no cluster, so there is nothing to score",
                          fix="add held_out: [CLUSTER] to the mixture")
    t0 = time.time()
    groups = heldout_examples(mix, per_task=per_task, shots=shots, log=log)
    total = sum(len(g["examples"]) for g in groups)
    log(f"held-out: {len(groups)} task × template groups, {total} examples "
        f"in clusters {', '.join(mix.held_out)}")
    rows, done, cut_total = [], 0, 0
    for g in groups:
        preds, cut = score_group(model, tokenizer, chat, g["examples"], batch_size=batch_size, generate=generate,
                                 max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens)
        row = group_scores(g, preds)
        row["dropped"] = g["dropped"]
        row["prompts_cut"] = cut
        row["samples"] = [{"target": e.target, **p} for e, p in list(zip(g["examples"], preds))[:3]]
        rows.append(row)
        done += row["n"]
        cut_total += cut
        el = time.time() - t0
        eta = el / done * (total - done) if done else math.nan
        main = row.get(row.get("primary", ""), None)
        log(f"  [{done}/{total}, {el:.0f}s, eta {eta:.0f}s] {g['task']} / {g['template']}: "
            + (f"{row['primary']} {main:.3f}" if main is not None else "no examples"))
    datasets, clusters = aggregate(rows)
    return {"mixture": mix.origin, "held_out": mix.held_out, "seed": mix.seed,
            "settings": {"per_task": per_task or mix.eval.max_per_task,
                         "shots": mix.eval.shots if shots is None else shots,
                         "templates_per_dataset": mix.eval.templates_per_dataset,
                         "options_suffix": mix.templates.options_suffix, "generate": generate,
                         "max_new_tokens": max_new_tokens, "max_prompt_tokens": max_prompt_tokens,
                         "chat_template": chat.name},
            "examples": total, "prompts_cut": cut_total, "elapsed_s": round(time.time() - t0, 1),
            "rows": rows, "datasets": datasets, "clusters": clusters}


# --------------------------------------------------------------------------- the table


def _fmt(d: dict, k: str) -> str:
    v = d.get(k)
    if v is None:
        return "–"
    return f"{v['mean'] if isinstance(v, dict) else v:.3f}"


def _main_key(d: dict) -> str | None:
    return next((k for k in ("accuracy", "rouge_l", "f1", "exact_match") if k in d), None)


def _spread(d: dict) -> str:
    k = _main_key(d)
    if k is None or not isinstance(d[k], dict):
        return ""
    v = d[k]
    return f"{k} {v['min']:.3f}–{v['max']:.3f} ±{v['std']:.3f} ({v['templates']})"


def print_tables(result: dict, title: str = "") -> None:
    """One table per held-out cluster: a row per dataset × template, then the dataset's mean over its
    templates and the spread of its main metric (min–max ±std, number of templates), then the cluster."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    cols = [("accuracy", "acc (LL)"), ("accuracy_norm", "acc (LL/tok)"), ("exact_match", "EM (gen)"),
            ("rouge_l", "ROUGE-L"), ("f1", "F1"), ("majority", "majority")]
    for c, crow in result["clusters"].items():
        used = [(k, h) for k, h in cols if k in crow]
        t = Table(title=f"{title}held-out cluster '{c}', {crow['n']} examples")
        for name in ("dataset", "template", "n", *(h for _, h in used), "spread over templates"):
            t.add_column(name, justify="left" if name in ("dataset", "template", "spread over templates") else "right")
        for d in crow["datasets"]:
            for r in (r for r in result["rows"] if r["dataset"] == d and r["cluster"] == c):
                t.add_row(d, r["template"], str(r["n"]), *[_fmt(r, k) for k, _ in used], "")
            dd = result["datasets"][d]
            t.add_row(f"[bold]{d}[/]", "[bold]mean[/]", str(dd["n"]), *[_fmt(dd, k) for k, _ in used], _spread(dd),
                      end_section=True)
        t.add_row(f"[bold]{c}[/]", "[bold]mean of datasets[/]", str(crow["n"]), *[_fmt(crow, k) for k, _ in used],
                  _spread(crow))
        console.print(t)
