"""Held-out task generalisation at this machine's scale (FLAN / T0's claim, in miniature).

Train Gemma 3 270M (base) with LoRA on the rendered T0 data with the sentiment cluster held out,
once on a mixture of few task clusters and once on a mixture of many, for the same number of
steps; then score zero-shot sentiment accuracy (option log-likelihood ranking, plus exact match
of generated text) for the base model and both tuned models, on the same held-out examples.

    python experiments/generalist/run.py                      # ~20 min on 2 idle CPU cores (measured, see README)
    python experiments/generalist/run.py --only base          # one row
    python experiments/generalist/run.py --model /tmp/tiny --steps 2 --eval-per-task 2 --templates 1 \\
        --work /tmp/gx                                        # smoke test with a tiny model

Writes experiments/generalist/results.json, results.md and results.png (runs, mixtures and
per-model eval JSON go to --work, default experiments/generalist/work/, not committed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
T0_DIR = ROOT.parent / "shared" / "data" / "multitask" / "t0"

FEW = ["paraphrase", "topic"]
MANY = ["paraphrase", "topic", "multiple_choice_qa", "closed_book_qa", "extractive_qa", "summarisation",
        "structure_to_text"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_mixture(args, name: str, clusters: list[str]) -> Path:
    """The mixture YAML for one arm; both arms share held_out, seed and eval settings, so all models
    are scored on the same held-out examples and templates."""
    mix = {
        "registries": ["t0"], "t0_dir": str(Path(args.t0_dir).resolve()),
        "include": {"clusters": clusters}, "held_out": [args.held_out],
        "mixing": {"method": "proportional", "cap": args.per_task, "total": args.steps * args.batch_size},
        "seed": args.seed, "templates": {"options_suffix": True}, "max_chars": args.max_chars,
        "eval": {"max_per_task": args.eval_per_task, "templates_per_dataset": args.templates, "shots": args.shots},
    }
    p = Path(args.work) / f"{name}.yaml"
    p.write_text(yaml.safe_dump(mix, sort_keys=False), encoding="utf-8")
    return p


def train_arm(args, name: str, clusters: list[str]) -> dict:
    from dianjing.config import DataFile, load_config
    from dianjing.generalist.mix import build_mixture, write_mixture as write_file
    from dianjing.generalist.registry import load_mixture
    from dianjing.train.loop import train

    mix_path = write_mixture(args, name, clusters)
    result = build_mixture(load_mixture(mix_path), log=log)
    data, _ = write_file(result, Path(args.work) / f"{name}.jsonl")
    out = Path(args.work) / "runs" / name
    if out.exists():
        import shutil

        shutil.rmtree(out)
    sets = [f"model.name={args.model}", f"train.output_dir={out}", "data.eval_fraction=0", "data.on_error=skip",
            f"data.max_length={args.max_length}", f"train.batch_size={args.batch_size}", "train.epochs=1",
            f"train.max_steps={args.steps}", f"train.lr={args.lr}", "adapter.method=lora",
            f"train.seed={args.seed}", "train.save_every=1000000"]
    cfg = load_config(None, sets)
    cfg.data.files = [DataFile(path=str(data), format="prompt_completion")]
    t = time.time()
    run_dir, summary = train(cfg, log=log)
    losses = [json.loads(l)["loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    return {"run": str(run_dir), "mixture": str(mix_path), "clusters": clusters,
            "train_examples": result.report["total"], "mix_clusters": result.report["clusters"],
            "steps": summary["steps"], "kept": summary["data"]["kept"], "tokens": summary["tokens"],
            "train_s": round(time.time() - t, 1), "tokens_per_s": summary["tokens_per_s"],
            "loss_first10": sum(losses[:10]) / max(1, len(losses[:10])),
            "loss_last10": sum(losses[-10:]) / max(1, len(losses[-10:])), "settings": sets}


def evaluate(args, name: str, target: str, mix_path: Path) -> dict:
    from dianjing.generalist.registry import load_mixture
    from dianjing.generalist.score import evaluate_heldout, print_tables
    from dianjing.infer.load import load_run

    t = time.time()
    model, tok, chat = load_run(target, precision="fp32", log=log)
    res = evaluate_heldout(model, tok, chat, load_mixture(mix_path), batch_size=args.eval_batch,
                           generate=not args.no_generate, max_prompt_tokens=args.max_prompt_tokens, log=log)
    res["run"] = target
    (Path(args.work) / f"eval-{name}.json").write_text(json.dumps(res, indent=1, ensure_ascii=False))
    print_tables(res, title=f"{name}: ")
    del model
    return {"eval_s": round(time.time() - t, 1), "result": res}


def summarise(name: str, info: dict, res: dict, cluster: str) -> dict:
    c = res["clusters"][cluster]
    row = {"model": name, "clusters_trained": info.get("clusters", []), "n": c["n"],
           "accuracy": c["accuracy"]["mean"], "accuracy_min": c["accuracy"]["min"],
           "accuracy_max": c["accuracy"]["max"], "accuracy_std": c["accuracy"]["std"],
           "templates": c["accuracy"]["templates"],
           "accuracy_norm": c.get("accuracy_norm", {}).get("mean"),
           "exact_match": c.get("exact_match", {}).get("mean"),
           "per_dataset": {d: {"accuracy": v["accuracy"]["mean"], "min": v["accuracy"]["min"],
                               "max": v["accuracy"]["max"], "majority": v["majority"]["mean"],
                               "exact_match": v.get("exact_match", {}).get("mean")}
                           for d, v in res["datasets"].items() if v["cluster"] == cluster}}
    row["chance"] = sum(r["chance"] for r in res["rows"] if r["cluster"] == cluster and r["n"]) / max(
        1, sum(1 for r in res["rows"] if r["cluster"] == cluster and r["n"]))
    return row


def write_outputs(args, rows: list[dict], meta: dict) -> None:
    out_json = Path(args.results) / "results.json"
    out_json.write_text(json.dumps({"date": str(date.today()), **meta, "rows": rows}, indent=1, ensure_ascii=False))
    datasets = sorted({d for r in rows for d in r["per_dataset"]})
    lines = [f"Held-out cluster **{args.held_out}**, zero-shot, {rows[0]['n']} examples per model "
             f"({args.eval_per_task} per task, {args.templates} templates per dataset), model {args.model}, "
             f"{args.steps} LoRA steps × batch {args.batch_size}.", "",
             "| model | clusters trained on | acc (LL) | min–max over templates | acc (LL/token) | EM (gen) | "
             + " | ".join(datasets) + " |",
             "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in datasets) + " |"]
    for r in rows:
        em = "–" if r["exact_match"] is None else f"{r['exact_match']:.3f}"
        norm = "–" if r["accuracy_norm"] is None else f"{r['accuracy_norm']:.3f}"
        lines.append(f"| {r['model']} | {', '.join(r['clusters_trained']) or '—'} | **{r['accuracy']:.3f}** | "
                     f"{r['accuracy_min']:.2f}–{r['accuracy_max']:.2f} | {norm} | {em} | "
                     + " | ".join(f"{r['per_dataset'][d]['accuracy']:.3f}" if d in r["per_dataset"] else "–"
                                  for d in datasets) + " |")
    maj = rows[0]["per_dataset"]
    lines.append(f"| best constant answer per dataset (oracle) | | {sum(v['majority'] for v in maj.values()) / max(1, len(maj)):.3f} | | | | "
                 + " | ".join(f"{maj[d]['majority']:.3f}" if d in maj else "–" for d in datasets) + " |")
    lines.append(f"| chance (1 / options) | | {rows[0]['chance']:.3f} | | | | " + " | ".join("" for _ in datasets) + " |")
    (Path(args.results) / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log("\n".join(lines))
    plot(args, rows)


def plot(args, rows: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[experiments]'): no plot")
        return
    fig, ax = plt.subplots(figsize=(9, 4.4))
    xs = range(len(rows))
    means = [r["accuracy"] for r in rows]
    err = [[m - r["accuracy_min"] for m, r in zip(means, rows)], [r["accuracy_max"] - m for m, r in zip(means, rows)]]
    ax.bar(xs, means, color=["#999999", "#6baed6", "#2171b5"][:len(rows)], yerr=err, capsize=6,
           label="cluster mean (bars: min–max over templates)")
    markers = "os^Dv<>p"
    for k, d in enumerate(sorted({d for r in rows for d in r["per_dataset"]})):
        ys = [r["per_dataset"].get(d, {}).get("accuracy") for r in rows]
        ax.scatter([x + 0.25 for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None],
                   marker=markers[k % len(markers)], s=22, zorder=3, label=d)
    ax.axhline(rows[0]["chance"], ls=":", color="k", lw=1, label="chance")
    ax.set_xticks(list(xs), [f"{r['model']}\n({len(r['clusters_trained'])} clusters)" if r["clusters_trained"]
                             else r["model"] for r in rows])
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"zero-shot accuracy, held-out {args.held_out}")
    ax.set_title(f"Held-out {args.held_out}: option log-likelihood ranking ({rows[0]['n']} examples)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    out = Path(args.results) / "results.png"
    fig.savefig(out, dpi=120)
    log(f"plot: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m", help="base model (default gemma-3-270m)")
    ap.add_argument("--t0-dir", default=str(T0_DIR))
    ap.add_argument("--held-out", default="sentiment")
    ap.add_argument("--few", default=",".join(FEW), help="clusters of the 'fewer tasks' arm")
    ap.add_argument("--many", default=",".join(MANY), help="clusters of the 'more tasks' arm")
    ap.add_argument("--steps", type=int, default=100, help="training steps, the same for both arms")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-chars", type=int, default=900, help="training examples longer than this are left out")
    ap.add_argument("--per-task", type=int, default=3000, help="FLAN's per-dataset cap in the mixtures")
    ap.add_argument("--eval-per-task", type=int, default=40, help="held-out examples per task (T0 file)")
    ap.add_argument("--templates", type=int, default=3, help="templates scored per held-out dataset")
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--eval-batch", type=int, default=8)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--no-generate", action="store_true", help="skip the generated-text exact match")
    ap.add_argument("--only", default="base,few,many", help="rows to run: base,few,many")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--results", default=None, help="folder for results.json/.md/.png (default: this folder, or "
                                                    "--work when --work is given)")
    args = ap.parse_args()
    if args.results is None:
        args.results = str(HERE) if args.work == str(HERE / "work") else args.work
    Path(args.work).mkdir(parents=True, exist_ok=True)
    Path(args.results).mkdir(parents=True, exist_ok=True)
    only = args.only.split(",")
    arms = {"few": args.few.split(","), "many": args.many.split(",")}
    t_all = time.time()
    rows, infos = [], {}
    eval_mix = write_mixture(args, "heldout-eval", arms["many"])  # any arm: held_out/seed/eval are shared
    if "base" in only:
        log(f"== base model {args.model}")
        ev = evaluate(args, "base", args.model, eval_mix)
        infos["base"] = {"eval_s": ev["eval_s"]}
        rows.append(summarise("base", {}, ev["result"], args.held_out))
    for name in ("few", "many"):
        if name not in only:
            continue
        log(f"== {name}: train on {', '.join(arms[name])} ({args.steps} steps × {args.batch_size})")
        info = train_arm(args, name, arms[name])
        ev = evaluate(args, name, info["run"], eval_mix)
        info["eval_s"] = ev["eval_s"]
        infos[name] = info
        rows.append(summarise(name, info, ev["result"], args.held_out))
    meta = {"model": args.model, "held_out": args.held_out, "settings": vars(args), "runs": infos,
            "total_s": round(time.time() - t_all, 1)}
    write_outputs(args, rows, meta)
    log(f"total {time.time() - t_all:.0f}s; results in {args.results}")


if __name__ == "__main__":
    main()
