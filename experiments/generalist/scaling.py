"""More task clusters and held-out performance, with seeds (issue 19, experiment 4; FLAN / Flan-PaLM).

experiments/generalist/run.py trained on 2 and on 7 T0 task clusters once each and found no gain
from more clusters on the held-out sentiment cluster. This script repeats that comparison as a
curve with its spread: 1, 2, 4 and 7 clusters (nested: each list is the first k of run.py's MANY),
3 seeds each, examples-proportional mixing under FLAN's cap; beside it temperature mixing (T=2)
at 4 and 7 clusters; the same steps for every arm, all scored zero-shot on the same held-out
prompts as the base model. The functions are run.py's (mixture, held-out scoring, summary), imported.

    python experiments/generalist/scaling.py                   # 18 trained arms + base, ~80 min on 2 idle cores (estimate: SCALING.md)
    python experiments/generalist/scaling.py --only base k7    # some arms: base, k7, temperature, s1, k4-temperature, k4-temperature-s1
    python experiments/generalist/scaling.py --model /tmp/tiny --steps 2 --batch-size 4 --eval-per-task 2 \\
        --templates 1 --max-chars 250 --max-prompt-tokens 100 --seeds 0 --clusters 1 2 \\
        --temperature-clusters 2 --work /tmp/gs                # smoke test with a tiny model

An arm whose evaluation is on disk with the same settings (work/arm-NAME.json) is reused, so a
killed run continues where it stopped; one trained but not scored is only scored. Writes
scaling.json, scaling.md and scaling.png into this folder (into --work when --work is given);
mixtures, run folders and per-arm eval JSON go to --work (default work/scaling/, not committed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import statistics
import time
from datetime import date
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "scaling"
METHODS = ("proportional", "temperature")
# run.py's measured rates (results.json, 2 idle cores, gemma-3-270m), for the start-up estimate only
TOKENS_PER_EXAMPLE, TRAIN_TOKENS_PER_S, EVAL_S_PER_PROMPT, HELD_OUT_DATASETS = 92, 234, 0.37, 5


def _generalist_run():
    spec = importlib.util.spec_from_file_location("generalist_run", HERE / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


G = _generalist_run()
ORDER = list(G.MANY)  # k clusters = the first k of these: 1 paraphrase, 2 = run.py's FEW, 7 = run.py's MANY
if ORDER[:2] != list(G.FEW):
    raise RuntimeError(f"run.py's FEW {G.FEW} is no longer the first two clusters of its MANY {G.MANY}: "
                       "the nested cluster lists of scaling.py assume it is; reorder MANY in run.py or set ORDER here")
log = G.log


# -- the arms ---------------------------------------------------------------------------------------
def grid(args) -> list[dict]:
    """Every trained arm of the design, in the order they run (cheapest clusters first)."""
    out = []
    for k in args.clusters:
        for method in METHODS:
            if method == "temperature" and k not in args.temperature_clusters:
                continue
            for seed in args.seeds:
                out.append({"name": f"k{k}-{method}-s{seed}", "k": k, "clusters": ORDER[:k], "method": method,
                            "temperature": args.temperature if method == "temperature" else None, "seed": seed})
    return out


def labels(arm: dict) -> set[str]:
    return {f"k{arm['k']}", arm["method"], f"s{arm['seed']}"}


def selected(args, arms: list[dict]) -> tuple[bool, list[dict]]:
    """--only: each token is 'all', 'base', or '-'-joined labels an arm must all have (k4, temperature, s1,
    k4-temperature, k4-temperature-s1); an arm runs if any token matches it."""
    tokens = [t for item in args.only for t in item.split(",") if t.strip()]
    if "all" in tokens:
        return True, arms
    chosen, unmatched = [], []
    for tok in tokens:
        if tok == "base":
            continue
        hits = [a for a in arms if set(tok.split("-")) <= labels(a)]
        if not hits:
            unmatched.append(tok)
        chosen += [a for a in hits if a not in chosen]
    if unmatched:
        names = sorted({lab for a in arms for lab in labels(a)})
        raise SystemExit(f"--only {' '.join(unmatched)}: matches no arm of this grid (--clusters {args.clusters}, "
                         f"--seeds {args.seeds}, temperature at k in {args.temperature_clusters}).\n  fix: use all, "
                         f"base, or labels joined by '-': {', '.join(names)} (e.g. k4-temperature-s1)")
    return "base" in tokens, [a for a in arms if a in chosen]


def with_seed(args, seed: int) -> argparse.Namespace:
    """run.py's functions read the seed from args.seed (mixture sampling, train.seed, held-out sample)."""
    ns = argparse.Namespace(**vars(args))
    ns.seed = seed
    return ns


EVAL_KEYS = ("model", "held_out", "eval_seed", "eval_per_task", "templates", "shots", "max_prompt_tokens",
             "no_generate")
TRAIN_KEYS = ("steps", "batch_size", "lr", "max_length", "max_chars", "per_task", "set")


def signature(args, arm: dict | None = None) -> dict:
    """Every setting an arm's numbers depend on; a stored arm is reused only when this is equal."""
    sig = {k: getattr(args, k) for k in EVAL_KEYS} | {"t0_dir": str(Path(args.t0_dir).resolve())}
    if arm is not None:
        sig |= {k: getattr(args, k) for k in TRAIN_KEYS}
        sig |= {k: arm[k] for k in ("clusters", "method", "temperature", "seed")}
    return json.loads(json.dumps(sig))  # as it reads back from the record (tuples become lists)


# -- one arm ----------------------------------------------------------------------------------------
def write_arm_mixture(args, arm: dict) -> Path:
    """run.py's mixture YAML (proportional under the cap, the arm's seed) with the arm's mixing method."""
    path = G.write_mixture(with_seed(args, arm["seed"]), arm["name"], arm["clusters"])
    if arm["method"] == "temperature":
        mix = yaml.safe_load(path.read_text(encoding="utf-8"))
        mix["mixing"].update(method="temperature", temperature=arm["temperature"])  # rate ∝ min(n, cap)^(1/T)
        path.write_text(yaml.safe_dump(mix, sort_keys=False), encoding="utf-8")
    return path


def train_arm(args, arm: dict) -> dict:
    """run.py's train_arm with two additions it has no parameter for: the arm's mixing method, and the
    --set overrides after the fixed settings."""
    from dianjing.config import DataFile, load_config
    from dianjing.generalist.mix import build_mixture, write_mixture as write_file
    from dianjing.generalist.registry import load_mixture
    from dianjing.train.loop import train

    work = Path(args.work)
    mix_path = write_arm_mixture(args, arm)
    result = build_mixture(load_mixture(mix_path), log=log)
    data, report_path = write_file(result, work / f"{arm['name']}.jsonl")
    rep = result.report
    empty = sorted(n for n, t in rep["tasks"].items() if not t["usable"])
    if empty:
        log(f"{arm['name']}: {len(empty)} T0 files give no example within --max-chars {args.max_chars} "
            f"(counted in {report_path})")
    out = work / "runs" / arm["name"]
    if out.exists():
        shutil.rmtree(out)
    sets = [f"model.name={args.model}", f"train.output_dir={out}", "data.eval_fraction=0", "data.on_error=skip",
            f"data.max_length={args.max_length}", f"train.batch_size={args.batch_size}", "train.epochs=1",
            f"train.max_steps={args.steps}", f"train.lr={args.lr}", "adapter.method=lora",
            f"train.seed={arm['seed']}", "train.save_every=1000000", *args.set]
    cfg = load_config(None, sets)
    cfg.data.files = [DataFile(path=str(data), format="prompt_completion")]
    t = time.time()
    run_dir, summary = train(cfg, log=log)
    train_s = round(time.time() - t, 1)
    kept = summary["data"]["kept"]
    if kept < rep["total"]:
        log(f"{arm['name']}: {rep['total'] - kept} of {rep['total']} mixture examples left out by training "
            f"(longer than --max-length {args.max_length} tokens; see {run_dir})")
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    return {"run": str(run_dir), "mixture": str(mix_path), "data": str(data), "report": str(report_path),
            "train_examples": rep["total"], "kept": kept, "mix_clusters": rep["clusters"],
            "datasets_used": sorted(d for d, f in rep["datasets"].items() if f["examples"]),
            "t0_files_used": sum(1 for t in rep["tasks"].values() if t["examples"]),
            "steps": summary["steps"], "tokens": summary["tokens"], "train_s": train_s,
            "loss_first10": sum(losses[:10]) / max(1, len(losses[:10])),
            "loss_last10": sum(losses[-10:]) / max(1, len(losses[-10:])), "settings": sets}


def cost(run: str) -> dict:
    """A trained arm's cost from its summary.json, and the same FLOPs on one H100 (dianjing.eval.cost)."""
    from dianjing.eval.cost import DEFAULT_MFU, projections, read_summary

    s = read_summary(run)
    h100 = next(p for p in projections(s.get("estimated_flops")) if p["accelerator"] == "H100-SXM")
    return {k: s.get(k) for k in ("tokens", "supervised_tokens", "estimated_flops", "tokens_per_s", "device", "mfu")} | {
        "train_wall_s": s.get("wall_time_s"), "h100_sxm_s": h100["seconds"], "h100_mfu": DEFAULT_MFU}


def record_path(args, name: str) -> Path:
    return Path(args.work) / f"arm-{name}.json"


def read_record(args, name: str, sig: dict) -> tuple[dict | None, str]:
    """The stored record of an arm if it has the same settings, and what state it is in."""
    p = record_path(args, name)
    if not p.is_file():
        return None, "new"
    rec = json.loads(p.read_text(encoding="utf-8"))
    if rec.get("settings") != sig:
        changed = sorted(k for k in set(sig) | set(rec.get("settings", {}))
                         if sig.get(k) != rec.get("settings", {}).get(k))
        return None, f"settings changed ({', '.join(changed)})"
    if rec.get("eval_s") is not None and (Path(args.work) / f"eval-{name}.json").is_file():
        return rec, "done"
    if rec.get("train") and Path(rec["train"]["run"], "summary.json").is_file():
        return rec, "trained"
    return None, "unfinished"


def save_record(args, name: str, rec: dict) -> None:
    record_path(args, name).write_text(json.dumps(rec, indent=1, ensure_ascii=False), encoding="utf-8")


def run_arm(args, arm: dict | None, eval_mix: Path) -> str:
    """Train (unless trained with these settings) and score one arm (None: the base model); returns what it did."""
    name = arm["name"] if arm else "base"
    sig = signature(args, arm)
    rec, state = read_record(args, name, sig)
    if state == "done":
        log(f"== {name}: finished with these settings, reused ({record_path(args, name)})")
        return "reused"
    if state not in ("new", "trained"):
        log(f"== {name}: the stored arm is not reused: {state}")
    if arm is None:
        rec, target = {"settings": sig}, args.model
        log(f"== base model {args.model}")
    else:
        if rec is None:
            log(f"== {name}: {arm['method']} mixing"
                + (f" (T={arm['temperature']})" if arm["temperature"] else "")
                + f" of {arm['k']} cluster{'s' if arm['k'] > 1 else ''} ({', '.join(arm['clusters'])}), seed {arm['seed']}, "
                f"{args.steps} steps × {args.batch_size}")
            info = train_arm(args, arm)
            rec = {"settings": sig, "arm": arm, "train": info, "cost": cost(info["run"])}
            save_record(args, name, rec)  # a kill during scoring keeps the training
        else:
            log(f"== {name}: trained with these settings, not yet scored: scoring {rec['train']['run']}")
        target = rec["train"]["run"]
    ev = G.evaluate(with_seed(args, args.eval_seed), name, target, eval_mix)
    rec["eval_s"] = ev["eval_s"]
    save_record(args, name, rec)
    return "ran"


# -- collecting -------------------------------------------------------------------------------------
def finished_row(args, arm: dict | None) -> dict | None:
    """The arm's row from its record and eval JSON, if it finished with the current settings."""
    name = arm["name"] if arm else "base"
    rec, state = read_record(args, name, signature(args, arm))
    if state != "done":
        return None
    res = json.loads((Path(args.work) / f"eval-{name}.json").read_text(encoding="utf-8"))
    row = G.summarise(name, {"clusters": arm["clusters"] if arm else []}, res, args.held_out)
    pd = row["per_dataset"]
    row["movie_balanced"] = (pd["imdb"]["accuracy"] + pd["rotten_tomatoes"]["accuracy"]) / 2 if {
        "imdb", "rotten_tomatoes"} <= set(pd) else None
    row["eval_s"] = rec["eval_s"]
    if arm:
        t = rec["train"]
        row |= {k: arm[k] for k in ("k", "method", "temperature", "seed")}
        row |= {k: t[k] for k in ("steps", "kept", "train_examples", "mix_clusters", "datasets_used",
                                  "t0_files_used", "train_s", "loss_first10", "loss_last10", "run")}
        row["cost"] = rec["cost"]
    return row


def spread(vals: list) -> dict:
    vals = [v for v in vals if v is not None]
    return {"mean": statistics.fmean(vals) if vals else None,
            "std": statistics.stdev(vals) if len(vals) > 1 else None, "values": vals}


def groups(rows: list[dict]) -> list[dict]:
    """Seeds pooled per (k, method): mean, sample standard deviation (n − 1) and each seed's value."""
    out = []
    for k in sorted({r["k"] for r in rows}):
        for method in METHODS:
            g = sorted((r for r in rows if r["k"] == k and r["method"] == method), key=lambda r: r["seed"])
            if not g:
                continue
            out.append({"k": k, "method": method, "temperature": g[0]["temperature"], "clusters": g[0]["clusters_trained"],
                        "seeds": [r["seed"] for r in g], "accuracy": spread([r["accuracy"] for r in g]),
                        "exact_match": spread([r["exact_match"] for r in g]),
                        "movie_balanced": spread([r["movie_balanced"] for r in g]),
                        "datasets_used": len(g[0]["datasets_used"]),
                        "tokens": statistics.fmean(r["cost"]["tokens"] for r in g),
                        "estimated_flops": statistics.fmean(r["cost"]["estimated_flops"] or 0 for r in g),
                        "train_s": statistics.fmean(r["train_s"] for r in g),
                        "h100_sxm_s": statistics.fmean(r["cost"]["h100_sxm_s"] or 0 for r in g)})
    return out


# -- outputs ----------------------------------------------------------------------------------------
def num(x, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def pm(s: dict) -> str:
    return f"{num(s['mean'])} ± {num(s['std'])}" if s["std"] is not None else num(s["mean"])


def trend(rows: list[dict], base: dict | None) -> dict:
    """Does accuracy rise with k? The least-squares slope of accuracy on k over the proportional arms (every
    seed a point) with its standard error and t; the difference of the largest k from the smallest (Welch's
    t, seeds as samples); and how many arms score below the base model."""
    pts = [(r["k"], r["accuracy"]) for r in rows if r["method"] == "proportional"]
    out: dict = {"arms": len(rows)}
    if base:
        out["below_base"] = sum(r["accuracy"] < base["accuracy"] for r in rows)
    ks = sorted({k for k, _ in pts})
    if len(pts) < 3 or len(ks) < 2:
        return out
    n = len(pts)
    mk, my = sum(k for k, _ in pts) / n, sum(y for _, y in pts) / n
    sxx = sum((k - mk) ** 2 for k, _ in pts)
    slope = sum((k - mk) * (y - my) for k, y in pts) / sxx
    resid = sum((y - my - slope * (k - mk)) ** 2 for k, y in pts) / (n - 2)
    se = math.sqrt(resid / sxx)
    out["slope"] = {"per_cluster": round(slope, 4), "se": round(se, 4), "t": round(slope / se, 2) if se else None,
                    "points": n}
    lo = [y for k, y in pts if k == ks[0]]
    hi = [y for k, y in pts if k == ks[-1]]
    if len(lo) > 1 and len(hi) > 1:
        v = statistics.variance(lo) / len(lo) + statistics.variance(hi) / len(hi)
        d = statistics.mean(hi) - statistics.mean(lo)
        out["largest_minus_smallest"] = {"k": [ks[0], ks[-1]], "difference": round(d, 4),
                                         "welch_t": round(d / math.sqrt(v), 2) if v else None}
    return out


def trend_lines(rows: list[dict], base: dict | None) -> list[str]:
    t = trend(rows, base)
    lines = [""]
    if "below_base" in t:
        lines.append(f"{t['below_base']} of {t['arms']} trained arms score below the base model.")
    if "slope" in t:
        s = t["slope"]
        lines.append(f"Trend over the proportional arms ({s['points']} points, every seed one): accuracy changes by "
                     f"{s['per_cluster']:+.4f} per cluster added (standard error {s['se']:.4f}, t = {s['t']} on "
                     f"{s['points'] - 2} degrees of freedom; a 95% two-sided test needs |t| above about 2.2 at 10).")
    if "largest_minus_smallest" in t:
        d = t["largest_minus_smallest"]
        lines.append(f"k = {d['k'][1]} minus k = {d['k'][0]} (proportional): {d['difference']:+.3f} "
                     f"(Welch's t = {d['welch_t']}, seeds as samples).")
    return lines


def write_outputs(args, base: dict | None, rows: list[dict], missing: list[str], meta: dict) -> None:
    res = Path(args.results)
    gs = groups(rows)
    (res / "scaling.json").write_text(json.dumps({"date": str(date.today()), **meta, "base": base, "groups": gs,
                                                  "trend": trend(rows, base),
                                                  "arms": rows, "missing": missing}, indent=1, ensure_ascii=False),
                                      encoding="utf-8")
    ref = base or (rows[0] if rows else None)
    n = f"{ref['n']} prompts per model" if ref else "no model scored yet"
    lines = [f"Held-out cluster **{args.held_out}**, zero-shot, {n} ({args.eval_per_task} rows per task, "
             f"{args.templates} templates per dataset, held-out sample seed {args.eval_seed}), model {args.model}, "
             f"{args.steps} LoRA steps × batch {args.batch_size} for every arm; temperature mixing at T={args.temperature}. "
             "Mean ± sample standard deviation over seeds (n − 1), then each seed's value (seeds in the order listed). "
             "acc: option log-likelihood ranking; EM: exact match of greedy text; movie: (imdb + rotten_tomatoes) / 2, "
             "a balanced accuracy (one is all negative, the other all positive in T0's rows).", "",
             "| k | clusters | mixing | datasets | seeds | acc (LL) | acc per seed | EM (gen) | EM per seed | movie | "
             "tokens / arm | CPU train s / arm | H100 s / arm (40% MFU) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    if base:
        lines.append(f"| 0 | — (base model) | — | — | — | **{num(base['accuracy'])}** | | {num(base['exact_match'])} | | "
                     f"{num(base['movie_balanced'])} | | | |")
    for g in gs:
        mixing = g["method"] + (f" T={g['temperature']:g}" if g["temperature"] else "")
        lines.append(
            f"| {g['k']} | {', '.join(g['clusters'])} | {mixing} | {g['datasets_used']} | "
            f"{' '.join(map(str, g['seeds']))} | **{pm(g['accuracy'])}** | "
            f"{' '.join(num(v) for v in g['accuracy']['values'])} | {pm(g['exact_match'])} | "
            f"{' '.join(num(v) for v in g['exact_match']['values'])} | {pm(g['movie_balanced'])} | "
            f"{g['tokens']:.0f} | {g['train_s']:.0f} | {g['h100_sxm_s']:.3g} |")
    if ref:
        lines.append(f"| | chance (1 / options) | | | | {num(ref['chance'])} | | | | 0.500 | | | |")
    lines += trend_lines(rows, base)
    lines.append("")
    lines.append(f"{len(rows)} trained arms finished with these settings"
                 + (f"; not yet run: {', '.join(missing)}" if missing else "") + ".")
    (res / "scaling.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log("\n".join(lines))
    plot(args, base, rows, gs)


def plot(args, base: dict | None, rows: list[dict], gs: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[experiments]'): no plot")
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    style = {"proportional": ("#2171b5", "o", 0.96), "temperature": ("#d94801", "s", 1.04)}
    for method in METHODS:
        g = [x for x in gs if x["method"] == method]
        if not g:
            continue
        color, marker, shift = style[method]  # a small sideways shift (x is log-scaled) so the methods don't overlap
        xs = [x["k"] * shift for x in g]
        label = method + (f" (T={g[0]['temperature']:g})" if g[0]["temperature"] else " (capped)")
        ax.errorbar(xs, [x["accuracy"]["mean"] for x in g], yerr=[x["accuracy"]["std"] or 0 for x in g],
                    color=color, marker=marker, capsize=5, lw=1.6, label=f"{label}: mean ± std over seeds")
        pts = [r for r in rows if r["method"] == method]
        ax.scatter([r["k"] * shift for r in pts], [r["accuracy"] for r in pts], color=color, marker=marker,
                   s=14, alpha=0.45, zorder=3)
    if base:
        ax.axhline(base["accuracy"], color="#555555", lw=1.2, label=f"base model ({base['accuracy']:.3f})")
    ref = base or (rows[0] if rows else None)
    if ref:
        ax.axhline(ref["chance"], color="k", ls=":", lw=1, label="chance")
    ks = sorted({r["k"] for r in rows}) or list(args.clusters)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("task clusters trained on (nested: paraphrase, + topic, + MC QA, closed-book QA, + 3 more)")
    ax.set_ylabel(f"zero-shot accuracy, held-out {args.held_out}")
    ax.set_title(f"Held-out {args.held_out} vs clusters trained on ({args.steps} steps each; faint points: seeds)",
                 fontsize=10)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    out = Path(args.results) / "scaling.png"
    fig.savefig(out, dpi=120)
    log(f"plot: {out}")


def estimate_s(args, n_arms: int, base: bool) -> float:
    """Minutes this invocation would take at run.py's measured rates (gemma-3-270m, 2 idle cores)."""
    train = args.steps * args.batch_size * TOKENS_PER_EXAMPLE / TRAIN_TOKENS_PER_S
    score = HELD_OUT_DATASETS * args.templates * args.eval_per_task * EVAL_S_PER_PROMPT
    return n_arms * (train + score + 5) + (score if base else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m", help="base model (default gemma-3-270m)")
    ap.add_argument("--t0-dir", default=str(G.T0_DIR))
    ap.add_argument("--held-out", default="sentiment")
    ap.add_argument("--clusters", type=int, nargs="+", default=[1, 2, 4, 7],
                    help=f"cluster counts k; an arm trains on the first k of: {', '.join(ORDER)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="seeds per (k, method): each sets the mixture's sampling and train.seed")
    ap.add_argument("--temperature-clusters", type=int, nargs="*", default=[4, 7],
                    help="the k that also get a temperature-mixing arm (none: leave it empty)")
    ap.add_argument("--temperature", type=float, default=2.0, help="T of temperature mixing: rate ∝ min(n, cap)^(1/T)")
    ap.add_argument("--steps", type=int, default=60, help="training steps, the same for every arm")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-chars", type=int, default=900, help="training examples longer than this are left out")
    ap.add_argument("--per-task", type=int, default=3000, help="FLAN's per-dataset cap in the mixtures")
    ap.add_argument("--eval-per-task", type=int, default=20, help="held-out rows per task (T0 file)")
    ap.add_argument("--templates", type=int, default=2, help="templates scored per held-out dataset")
    ap.add_argument("--eval-seed", type=int, default=0,
                    help="seed of the held-out sample (rows and templates), the same for every arm")
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--eval-batch", type=int, default=8)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--no-generate", action="store_true", help="skip the generated-text exact match")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more config for every training arm, after the fixed settings, e.g. --set train.threads=2 "
                         "(repeatable; part of an arm's settings, so changing it retrains)")
    ap.add_argument("--only", nargs="+", default=["all"],
                    help="what to run now: all, base, or labels joined by '-' (k4, temperature, s1, k4-temperature-s1); "
                         "the outputs still gather every finished arm of the grid")
    ap.add_argument("--work", default=str(WORK))
    ap.add_argument("--results", default=None, help="folder for scaling.json/.md/.png (default: this folder, or "
                                                    "--work when --work is given)")
    args = ap.parse_args()
    bad = [k for k in args.clusters + args.temperature_clusters if not 1 <= k <= len(ORDER)]
    if bad:
        ap.error(f"cluster count {bad[0]} is not between 1 and {len(ORDER)}: give k in 1..{len(ORDER)} "
                 f"(k trains on the first k of {', '.join(ORDER)})")
    if args.temperature <= 0:
        ap.error(f"--temperature {args.temperature}: T must be above 0 (1 is proportional mixing; 2 is this study's)")
    args.clusters = sorted(set(args.clusters))
    args.seeds = sorted(set(args.seeds))
    args.temperature_clusters = sorted(set(args.temperature_clusters))
    idle = [k for k in args.temperature_clusters if k not in args.clusters]
    if idle:
        log(f"--temperature-clusters {' '.join(map(str, idle))}: not in --clusters, so no temperature arm for them")
    arms = grid(args)
    do_base, todo = selected(args, arms)
    if args.results is None:
        args.results = str(HERE) if args.work == str(WORK) else args.work
    Path(args.work).mkdir(parents=True, exist_ok=True)
    Path(args.results).mkdir(parents=True, exist_ok=True)
    todo_s = estimate_s(args, len(todo), do_base)
    log(f"{len(arms)} trained arms in the grid; this run: {'base + ' if do_base else ''}{len(todo)} "
        f"(finished ones are reused). At run.py's measured rates (gemma-3-270m, 2 idle cores) that is "
        f"~{todo_s / 60:.0f} min if none is reused")
    t_all = time.time()
    eval_mix = G.write_mixture(with_seed(args, args.eval_seed), "heldout-eval", ORDER)  # held_out/eval are shared
    did = {}
    if do_base:
        did["base"] = run_arm(args, None, eval_mix)
    fresh_s = []
    for i, arm in enumerate(todo, 1):
        t = time.time()
        did[arm["name"]] = run_arm(args, arm, eval_mix)
        if did[arm["name"]] == "ran":
            fresh_s.append(time.time() - t)
        left = len(todo) - i
        eta = f", eta ~{statistics.fmean(fresh_s) * left / 60:.0f} min" if fresh_s and left else ""
        log(f"-- {i}/{len(todo)} arms ({did[arm['name']]}), {(time.time() - t_all) / 60:.1f} min so far{eta}")

    base = finished_row(args, None)
    rows, missing = [], []
    for arm in arms:
        row = finished_row(args, arm)
        if row is None:
            missing.append(arm["name"])
        else:
            rows.append(row)
    if base is None:
        missing.insert(0, "base")
    h100 = sum(r["cost"]["h100_sxm_s"] or 0 for r in rows)
    meta = {"model": args.model, "held_out": args.held_out, "cluster_order": ORDER, "settings": vars(args),
            "this_invocation": did, "total_s": round(time.time() - t_all, 1),
            "train_s_all_arms": round(sum(r["train_s"] for r in rows), 1),
            "eval_s_all_models": round(sum(r["eval_s"] for r in rows) + (base["eval_s"] if base else 0), 1),
            "h100_sxm_s_all_arms": round(h100, 3), "flops_all_arms": sum(r["cost"]["estimated_flops"] or 0 for r in rows)}
    prev = Path(args.results) / "scaling.json"
    if did and all(v == "reused" for v in did.values()) and prev.is_file():  # only the tables were written again:
        old = json.loads(prev.read_text(encoding="utf-8"))  # keep the wall time of the run that made the arms
        meta["total_s_when_run"] = old.get("total_s_when_run", old.get("total_s"))
    write_outputs(args, base, rows, missing, meta)
    log(f"total {time.time() - t_all:.0f}s; {len(rows)} of {len(arms)} arms finished"
        + (f", missing {', '.join(missing)}" if missing else "") + f"; results in {args.results}")


if __name__ == "__main__":
    main()
