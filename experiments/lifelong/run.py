"""Lifelong learning at this machine's scale: does LAMOL keep the earlier tasks that sequential
fine-tuning forgets, and how far is it from multitask training (the paper: 2-3% below)?

Runs experiments/lifelong/sequence.yaml (4 tasks: amazon_polarity, ag_news, adversarial_qa, DRCD in
Chinese; Gemma 3 270M base, LoRA) with each strategy on the same task order, and LAMOL and sequential
again on the reversed order:

    python experiments/lifelong/run.py                        # the whole experiment (planned: under 2 h here)
    python experiments/lifelong/run.py --only lamol-1,sequential-1
    python experiments/lifelong/run.py --per-task 8 --eval 2 --steps 1 --set train.compile=off \
        --work /tmp/ll-smoke                                  # smoke test: one step per task

Writes results.json, results.md and results.png into this folder (with --work elsewhere: there);
each arm's continual run folder goes to --work (default experiments/lifelong/work/, not committed).
An arm whose run folder has results.json is read, not run again; one that stopped is resumed.
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
ARMS = {  # name: (strategy, order)
    "lamol-1": ("lamol", 1), "sequential-1": ("sequential", 1), "replay-1": ("replay", 1),
    "multitask-1": ("multitask", 1), "lamol-2": ("lamol", 2), "sequential-2": ("sequential", 2),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def arm_sequence(args, name: str) -> Path:
    """The arm's sequence file: sequence.yaml with its strategy, order and this run's sizes."""
    strategy, order = ARMS[name]
    tree = yaml.safe_load((HERE / "sequence.yaml").read_text(encoding="utf-8"))
    tree["strategy"] = strategy
    if args.tasks:
        keep = [n.strip() for n in args.tasks.split(",") if n.strip()]
        missing = [n for n in keep if n not in {t["name"] for t in tree["tasks"]}]
        if missing:
            raise SystemExit(f"--tasks: {missing} are not tasks of sequence.yaml ({', '.join(task_names())})")
        tree["tasks"] = [t for t in tree["tasks"] if t["name"] in keep]
    if order == 2:
        tree["tasks"] = tree["tasks"][::-1]
    for t in tree["tasks"]:
        t["files"] = [str((HERE / f).resolve()) for f in t["files"]]
        t["max_examples"], t["eval_examples"] = args.per_task, args.eval
    tree["model"]["name"] = args.model
    tree["max_length"] = args.max_length
    tree["train"].update({"epochs": args.epochs, "seed": args.seed})
    if args.steps:
        tree["train"]["max_steps"] = args.steps
    from dianjing.config import apply_override

    for assignment in args.set:  # --set KEY=VALUE on the sequence file's keys (train.compile=off, lamol.gamma=…)
        apply_override(tree, assignment)
    path = Path(args.work) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def run_arm(args, name: str) -> dict:
    from dianjing.lifelong.driver import is_continual, resume_sequence, train_sequence

    out = Path(args.work) / "runs" / name
    if (out / "results.json").exists():
        log(f"{name}: already run, reading {out / 'results.json'}")
        return json.loads((out / "results.json").read_text(encoding="utf-8"))
    t = time.time()
    if is_continual(out):
        _, res = resume_sequence(out, log=log)
    else:
        _, res = train_sequence(arm_sequence(args, name), None, str(out), log=log)
    res["wall_time_s"] = round(time.time() - t, 1)
    (out / "results.json").write_text(json.dumps(res, indent=1, ensure_ascii=False), encoding="utf-8")
    return res


def arm_cost(args, name: str) -> dict:
    """What an arm's training cost: its stages' tokens, FLOPs and wall time (summary.json), and the same FLOPs
    on one H100 at 40% of its bf16 peak (dianjing.eval.cost's table, as `dianjing cost` projects a run)."""
    from dianjing.eval.cost import ACCELERATORS, DEFAULT_MFU

    stages = sorted((Path(args.work) / "runs" / name / "stages").glob("*/summary.json"))
    sums = [json.loads(p.read_text(encoding="utf-8")) for p in stages]
    flops = sum(s.get("estimated_flops") or 0 for s in sums)
    return {"stages": len(sums), "tokens": sum(s.get("tokens") or 0 for s in sums),
            "train_wall_s": round(sum(s.get("wall_time_s") or 0 for s in sums), 1), "flops": flops,
            "h100_s_at_40pct": round(flops / (ACCELERATORS["H100-SXM"] * 1e12 * DEFAULT_MFU), 2)}


def task_names() -> list[str]:
    """The tasks in sequence.yaml's order (order 1): the table's columns, whatever order an arm used."""
    return [t["name"] for t in yaml.safe_load((HERE / "sequence.yaml").read_text(encoding="utf-8"))["tasks"]]


def side_by_side(arms: dict[str, dict]) -> str:
    """One row per arm: the final score on each task, the average, forgetting and BWT."""
    first = next(iter(arms.values()))
    tasks = [t for t in task_names() if t in first["tasks"]]
    head = "| arm | order | " + " | ".join(f"{t} ({first['metrics'][t]})" for t in tasks) + \
        " | average | avg forgetting | BWT | time | training FLOPs (H100 at 40%) |"
    lines = [head, "| --- |" + " --- |" * (len(tasks) + 6)]
    for name, r in arms.items():
        f = r.get("average_forgetting")
        lines.append(f"| {name} | {' → '.join(r['tasks'])} | " + " | ".join(f"{r['final'][t]:.1f}" for t in tasks)
                     + f" | {r['average']:.1f} | {'–' if f is None else f'{f:.1f}'} | "
                     f"{'–' if r['bwt'] is None else format(r['bwt'], '.1f')} | {r.get('wall_time_s', 0) / 60:.0f} min | "
                     + (f"{r['cost']['flops']:.2e} ({r['cost']['h100_s_at_40pct']:.1f} s) |" if r.get("cost") else "– |"))
    maj = first["majority_rate"]
    lines.append("| majority class | | " + " | ".join("" if maj.get(t) is None else f"{maj[t]:.1f}" for t in tasks)
                 + " | | | | | |")
    return "\n".join(lines)


def plot(arms: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(arms.values()))
    tasks = first["tasks"]
    fig, axes = plt.subplots(1, len(arms), figsize=(3.2 * len(arms), 3.4), squeeze=False)
    for ax, (name, r) in zip(axes[0], arms.items()):
        data = [[float("nan") if v is None else v for v in row] for row in r["matrix"]]
        ax.imshow(data, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for i, row in enumerate(r["matrix"]):
            for j, v in enumerate(row):
                if v is not None:
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                            color="white" if v < 60 else "black")
        ax.set_xticks(range(len(r["tasks"])), r["tasks"], fontsize=7, rotation=30)
        ax.set_yticks(range(len(r["rows"])), [x.split(": ")[-1] for x in r["rows"]], fontsize=7)
        ax.set_title(f"{name}: avg {r['average']:.1f}", fontsize=9)
    fig.suptitle("score on each task (column) after each stage (row)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--per-task", type=int, default=120, help="training examples per task")
    p.add_argument("--eval", type=int, default=40, help="held-out examples per task")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=0, help="max steps per task (0: epochs decide; smoke tests)")
    p.add_argument("--max-length", type=int, default=448)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tasks", default="", help="a subset of sequence.yaml's tasks, in its order (default: all)")
    p.add_argument("--only", default=",".join(ARMS), help="arms to run, of: " + ", ".join(ARMS))
    p.add_argument("--work", default=str(HERE / "work"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a sequence-file key for every arm, e.g. --set train.compile=off")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        p.error(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    from dianjing.errors import DianjingError

    try:
        arms = {n: run_arm(args, n) for n in names}
        for n in names:
            arms[n]["cost"] = arm_cost(args, n)
    except DianjingError as e:
        log(f"error: {e}")
        return 2
    dest = HERE if Path(args.work).resolve() == (HERE / "work").resolve() else Path(args.work)
    settings = {k: v for k, v in vars(args).items() if k != "only"}
    (dest / "results.json").write_text(json.dumps({"date": str(date.today()), "settings": settings, "arms": arms},
                                                  indent=1, ensure_ascii=False), encoding="utf-8")
    from dianjing.lifelong.results import table

    text = side_by_side(arms) + "\n\n" + "\n\n".join(f"### {n}\n\n{table(r)}" for n, r in arms.items())
    (dest / "results.md").write_text(text + "\n", encoding="utf-8")
    plot(arms, dest / "results.png")
    log("\n" + side_by_side(arms))
    log(f"wrote {dest / 'results.json'}, results.md, results.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
