"""The continual run's results: the accuracy matrix, average score, forgetting and backward transfer.

R[i][j] is the score on task j after stage i (percent, each task with its own metric); a task not
yet seen is null. With T tasks and the last row L (after the last task):

    average      mean_j R[L][j]
    forgetting   per task j < T: max_{i < L} R[i][j] − R[L][j]  (best earlier score minus final)
    BWT          mean_{j < T} (R[L][j] − R[j][j])  (backward transfer, Lopez-Paz and Ranzato 2017)

A multitask run has one row (after all tasks at once), so forgetting and BWT are null. Written as
results.json, results.md (the table printed at the end) and results.png (the matrix as a heat map).
"""

from __future__ import annotations

import json
from pathlib import Path


def compute(strategy: str, tasks: list[str], rows: list[str], matrix: list[list[float | None]],
            metrics: dict[str, str], majority: dict[str, float | None]) -> dict:
    last = matrix[-1]
    final = {t: last[j] for j, t in enumerate(tasks)}
    seen = [v for v in last if v is not None]
    res = {"strategy": strategy, "tasks": tasks, "rows": rows, "matrix": matrix, "metrics": metrics,
           "majority_rate": majority, "final": final,
           "average": round(sum(seen) / len(seen), 4) if seen else None, "forgetting": None, "bwt": None}
    if len(matrix) == len(tasks) and len(tasks) > 1:
        forgetting = {}
        for j, t in enumerate(tasks[:-1]):
            best = max(matrix[i][j] for i in range(j, len(tasks) - 1))
            forgetting[t] = round(best - last[j], 4)
        res["forgetting"] = forgetting
        res["average_forgetting"] = round(sum(forgetting.values()) / len(forgetting), 4)
        res["bwt"] = round(sum(last[j] - matrix[j][j] for j in range(len(tasks) - 1)) / (len(tasks) - 1), 4)
    return res


def table(res: dict) -> str:
    """The matrix and the summary figures as a Markdown table."""
    tasks = res["tasks"]
    head = [f"{t} ({res['metrics'][t]})" for t in tasks]
    lines = [f"strategy: {res['strategy']}", "", "| after | " + " | ".join(head) + " |",
             "| --- |" + " --- |" * len(tasks)]
    for name, row in zip(res["rows"], res["matrix"]):
        lines.append(f"| {name} | " + " | ".join("–" if v is None else f"{v:.1f}" for v in row) + " |")
    maj = res["majority_rate"]
    if any(maj.get(t) is not None for t in tasks):
        lines.append("| majority class | " + " | ".join("" if maj.get(t) is None else f"{maj[t]:.1f}"
                                                     for t in tasks) + " |")
    if res.get("forgetting"):
        lines.append("| forgetting | " + " | ".join(f"{res['forgetting'][t]:.1f}" if t in res["forgetting"]
                                                   else "" for t in tasks) + " |")
    lines += ["", f"average at the end: {res['average']:.2f}" if res["average"] is not None else "average: –"]
    if res.get("bwt") is not None:
        lines.append(f"average forgetting: {res['average_forgetting']:.2f}; backward transfer (BWT): {res['bwt']:.2f}")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> str | None:
    """The matrix as a heat map with its numbers; returns why not, when matplotlib cannot be imported."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib is not installed ({e}): pip install matplotlib"
    tasks, rows = res["tasks"], res["rows"]
    data = [[float("nan") if v is None else v for v in row] for row in res["matrix"]]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(tasks), 1.2 + 0.6 * len(rows)))
    im = ax.imshow(data, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for i, row in enumerate(res["matrix"]):
        for j, v in enumerate(row):
            if v is not None:
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if v < 60 else "black",
                        fontsize=9)
    ax.set_xticks(range(len(tasks)), [f"{t}\n({res['metrics'][t]})" for t in tasks], fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("scored on task")
    ax.set_title(f"{res['strategy']}: average {res['average']:.1f}"
                 + (f", BWT {res['bwt']:.1f}" if res.get("bwt") is not None else ""), fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def write(run_dir: Path, res: dict, log=print) -> None:
    (run_dir / "results.json").write_text(json.dumps(res, indent=1, ensure_ascii=False), encoding="utf-8")
    (run_dir / "results.md").write_text(table(res) + "\n", encoding="utf-8")
    why = plot(res, run_dir / "results.png")
    if why:
        log(f"no results.png: {why}")
