"""舉一反三: does a model fine-tuned from pre-trained weights generalise a taught fact, where one trained
from random weights learns the question's surface?

The lecture's claim: taught "台灣最高的山是哪座？ → 玉山", a model fine-tuned from pre-trained parameters
also answers "世界最高的山是哪座？" with 聖母峰; the same architecture trained from random parameters
on the same pairs learns a rule like "a question with 最高的山 → 玉山".

Both arms fully fine-tune the same architecture (Gemma 3 270M by default) on the same 40 question → short
answer pairs (questions.jsonl, zh-TW and English), for the same number of steps; one starts from the
pre-trained weights, the other from fresh random ones (`model.random_init=true`). Every model (and the
untuned pre-trained one, for reference) then answers, greedily, the 40 training questions, a paraphrase of
each (same answer) and an analogous question (same surface pattern, another answer). Scoring is one fixed
rule: an answer is right when it contains the key term or one of its aliases (dianjing's contains-the-answer,
Chinese-aware); the rule-failure rate is how often an analogous question gets the *training* answer.

    python experiments/pretrained_vs_scratch/run.py                  # the experiment (not yet run; see README)
    python experiments/pretrained_vs_scratch/run.py --only scratch   # one arm
    python -c "from pathlib import Path; from tests.tiny import build_model; build_model(Path('/tmp/tiny-ps'))"
    python experiments/pretrained_vs_scratch/run.py --model /tmp/tiny-ps --steps 2 --work /tmp/ps-smoke  # smoke

Writes results.json, results.md and results.png into this folder (with --work: into --work, so that a smoke
test never overwrites them); training files, run folders and every generation go to --work (default
experiments/pretrained_vs_scratch/work/, not committed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # experiments/common.py
from common import cli, fresh, log  # noqa: E402
SETS = ("train", "paraphrase", "analogous")
ARMS = ("base", "pretrained", "scratch")  # base: the untuned pre-trained model, scored for reference only
FIELDS = {"id": str, "lang": str, "train_q": str, "answer": str, "aliases": list, "paraphrase_q": str,
          "analogous_q": str, "analogous_answer": str, "analogous_aliases": list}


# -- the question set -------------------------------------------------------------------------------
def terms(item: dict, which: str) -> list[str]:
    """What counts as the answer: the key term and its aliases ('train' or 'analogous')."""
    if which == "train":
        return [item["answer"], *item["aliases"]]
    return [item["analogous_answer"], *item["analogous_aliases"]]


def matches(text: str, accepted: list[str]) -> bool:
    """The fixed rule: `text` contains one of the accepted terms (dianjing.eval.metrics.contains_answer:
    normalised, a contiguous run of answer tokens, a substring test for Chinese)."""
    from dianjing.eval.metrics import contains_answer

    return any(contains_answer(text, t) for t in accepted)


def load_items(path: Path) -> list[dict]:
    """questions.jsonl, checked: every field present and typed, ids and questions unique, and no answer
    that the contains-rule would confuse with another (see check_answers)."""
    items, where = [], {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            sys.exit(f"{path}:{n}: not JSON ({e})")
        for key, typ in FIELDS.items():
            if not isinstance(rec.get(key), typ) or (typ is str and not rec[key].strip()):
                sys.exit(f"{path}:{n}: field '{key}' must be a non-empty {typ.__name__}; every record needs "
                         f"{', '.join(FIELDS)}")
        if not all(isinstance(a, str) and a.strip() for a in rec["aliases"] + rec["analogous_aliases"]):
            sys.exit(f"{path}:{n}: aliases must be non-empty strings")
        if rec["id"] in where:
            sys.exit(f"{path}:{n}: id {rec['id']!r} is also on line {where[rec['id']]}")
        where[rec["id"]] = n
        rec["line"] = n
        items.append(rec)
    if not items:
        sys.exit(f"{path}: no question")
    for q in ("train_q", "paraphrase_q", "analogous_q"):
        seen: dict[str, str] = {}
        for it in items:
            if it[q] in seen:
                sys.exit(f"{path}:{it['line']}: {q} {it[q]!r} is also the question of {seen[it[q]]}")
            seen[it[q]] = it["id"]
    check_answers(path, items)
    return items


def check_answers(path: Path, items: list[dict]) -> None:
    """The rule must be able to tell the answers apart: no item's analogous answer may match its own training
    answer (either way round), nor any training answer in its language, or "answered with a training answer"
    would count right answers (across languages it may: "5月5日" holds the English item's "5"). A question must
    also not hold its own answer."""
    for it in items:
        for q, which in (("train_q", "train"), ("paraphrase_q", "train"), ("analogous_q", "analogous")):
            if matches(it[q], terms(it, which)):
                sys.exit(f"{path}:{it['line']}: {q} of {it['id']} contains its own answer: every answer would "
                         "count as right")
        if matches(it["analogous_q"], terms(it, "train")):
            sys.exit(f"{path}:{it['line']}: analogous_q of {it['id']} contains the training answer: an echo of "
                     "the question would count as a rule failure")
        for other in (o for o in items if o["lang"] == it["lang"]):
            for a in terms(it, "analogous"):
                for t in terms(other, "train"):
                    if matches(a, [t]) or matches(t, [a]):
                        sys.exit(f"{path}:{it['line']}: analogous answer {a!r} of {it['id']} and training answer "
                                 f"{t!r} of {other['id']} match each other under the contains rule: pick another "
                                 "question or alias")


def write_files(items: list[dict], work: Path) -> dict[str, Path]:
    """The training file (alpaca: instruction = train_q, output = answer) and one eval file per question set
    (alpaca, the key term as the reference, id and language as category)."""
    def dump(p: Path, rows: list[dict]) -> Path:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return p

    files = {"training": dump(work / "data" / "train_pairs.jsonl",
                              [{"instruction": it["train_q"], "input": "", "output": it["answer"]} for it in items])}
    for s in SETS:
        q, which = {"train": ("train_q", "train"), "paraphrase": ("paraphrase_q", "train"),
                    "analogous": ("analogous_q", "analogous")}[s]
        files[s] = dump(work / "data" / "eval" / f"{s}.jsonl",
                        [{"id": it["id"], "category": it["lang"], "instruction": it[q], "input": "",
                          "output": terms(it, which)[0]} for it in items])
    return files


# -- training and generation, through the CLI --------------------------------------------------------


def train_arm(args, arm: str, data: Path) -> dict:
    out = Path(args.work) / "runs" / arm
    fresh(out)
    lr = args.lr if arm == "pretrained" else args.scratch_lr
    sets = ["adapter.method=full", "data.eval_fraction=0", f"train.batch_size={args.batch_size}",
            f"train.epochs={args.epochs}", f"train.lr={lr}", f"train.seed={args.seed}",
            "train.save_every=1000000", *(["model.random_init=true"] if arm == "scratch" else []),
            *([f"train.max_steps={args.steps}"] if args.steps else []), *args.set]
    cmd = ["train", "--model", args.model, "--data", str(data), "--format", "alpaca", "-o", str(out)]
    for s in sets:
        cmd += ["--set", s]
    log(f"== {arm}: full fine-tuning from {'random' if arm == 'scratch' else 'pre-trained'} weights, lr {lr}")
    seconds = cli(cmd, Path(args.work) / f"train-{arm}.log")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    losses = [json.loads(l)["loss"] for l in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    k = max(1, min(5, len(losses) // 4 or 1))
    return {"run": str(out), "lr": lr, "settings": sets, "command_s": round(seconds, 1), "summary": summary,
            "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k, "losses": losses}


def generate(args, arm: str, target: str, files: dict[str, Path]) -> tuple[dict, float]:
    """Greedy answers of `target` to the three question sets: {set: {id: answer}}, and the seconds it took."""
    out = Path(args.work) / "eval" / arm
    out.mkdir(parents=True, exist_ok=True)
    seconds = cli(["eval", target, "--data", *(str(files[s]) for s in SETS), "--format", "alpaca",
                   "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.eval_batch),
                   "--out", str(out)], Path(args.work) / f"eval-{arm}.log")
    gens = {}
    for s in SETS:
        rows = [json.loads(l) for l in (out / f"{s}.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
        gens[s] = {r["id"]: r["answer"] or "" for r in rows}
    return gens, seconds


# -- scoring ----------------------------------------------------------------------------------------
def score(items: list[dict], gens: dict) -> dict:
    """Accuracy per question set, the rule-failure rate, and each item's answers and verdicts."""
    train_terms = {lang: [t for it in items if it["lang"] == lang for t in terms(it, "train")]
                   for lang in {it["lang"] for it in items}}
    per_item, out = [], {}
    for it in items:
        a_tr, a_pa, a_an = (gens[s].get(it["id"], "") for s in SETS)
        per_item.append({
            "id": it["id"], "lang": it["lang"],
            "train": {"q": it["train_q"], "answer": a_tr, "right": matches(a_tr, terms(it, "train"))},
            "paraphrase": {"q": it["paraphrase_q"], "answer": a_pa, "right": matches(a_pa, terms(it, "train"))},
            "analogous": {"q": it["analogous_q"], "answer": a_an, "right": matches(a_an, terms(it, "analogous")),
                          "training_answer": matches(a_an, terms(it, "train")),
                          "any_training_answer": matches(a_an, train_terms[it["lang"]])}})
    for lang in ("all", *sorted({it["lang"] for it in items})):
        rows = [r for r in per_item if lang == "all" or r["lang"] == lang]
        n = len(rows)
        count = lambda pred: sum(1 for r in rows if pred(r))  # noqa: E731
        learned = [r for r in rows if r["train"]["right"]]
        out[lang] = {
            "n": n,
            "train": count(lambda r: r["train"]["right"]) / n,
            "paraphrase": count(lambda r: r["paraphrase"]["right"]) / n,
            "analogous": count(lambda r: r["analogous"]["right"]) / n,
            "rule_failure": count(lambda r: r["analogous"]["training_answer"]) / n,
            "any_training_answer": count(lambda r: r["analogous"]["any_training_answer"]) / n,
            "analogous_both": count(lambda r: r["analogous"]["right"] and r["analogous"]["training_answer"]),
            "learned": len(learned),
            "analogous_if_learned": (sum(r["analogous"]["right"] for r in learned) / len(learned)) if learned else None,
            "rule_failure_if_learned": (sum(r["analogous"]["training_answer"] for r in learned) / len(learned))
            if learned else None}
    return {"scores": out, "items": per_item}


def cost(info: dict) -> dict:
    """A trained arm's cost from its summary.json, and the same FLOPs on one H100 (dianjing.eval.cost)."""
    from dianjing.eval.cost import DEFAULT_MFU, projections

    s = info["summary"]
    h100 = next(p for p in projections(s.get("estimated_flops")) if p["accelerator"] == "H100-SXM")
    return {"steps": s.get("steps"), "tokens": s.get("tokens"), "supervised_tokens": s.get("supervised_tokens"),
            "estimated_flops": s.get("estimated_flops"), "train_wall_s": s.get("wall_time_s"),
            "tokens_per_s": s.get("tokens_per_s"), "device": s.get("device"), "mfu": s.get("mfu"),
            "h100_sxm_s": h100["seconds"], "h100_mfu": DEFAULT_MFU}


# -- outputs ----------------------------------------------------------------------------------------
def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def write_outputs(args, items: list[dict], rows: dict, runs: dict, meta: dict) -> None:
    res = Path(args.results)
    (res / "results.json").write_text(json.dumps({"date": str(date.today()), **meta, "arms": rows, "runs": runs},
                                                 indent=1, ensure_ascii=False), encoding="utf-8")
    n = len(items)
    langs = ", ".join(f"{k} {v}" for k, v in meta["languages"].items())
    arms = ", ".join(f"{a} {r['summary'].get('steps')} steps at lr {r['lr']}" for a, r in runs.items())
    lines = [f"{n} questions ({langs}), model {args.model}, full fine-tuning"
             + (f": {arms}, batch {args.batch_size}" if runs else "")
             + f"; greedy answers of at most {args.max_new_tokens} tokens. Right = the answer "
             "contains the key term or an alias.", "",
             "| model | train | paraphrase | analogous | rule failure (analogous → its training answer) | "
             "analogous → any training answer of its language |",
             "| --- | --- | --- | --- | --- | --- |"]
    for arm, r in rows.items():
        s = r["scores"]["all"]
        name = arm + (" (untuned, reference)" if arm == "base" else "")
        lines.append(f"| {name} | {pct(s['train'])} | {pct(s['paraphrase'])} | **{pct(s['analogous'])}** | "
                     f"**{pct(s['rule_failure'])}** | {pct(s['any_training_answer'])} |")
    lines += ["", "By language (train / paraphrase / analogous / rule failure):", "",
              "| model | " + " | ".join(l for l in meta["languages"]) + " |",
              "| --- | " + " | ".join("---" for _ in meta["languages"]) + " |"]
    for arm, r in rows.items():
        lines.append(f"| {arm} | " + " | ".join(
            " / ".join(pct(r["scores"][l][k]) for k in ("train", "paraphrase", "analogous", "rule_failure"))
            for l in meta["languages"]) + " |")
    lines += ["", "Where the training question is answered right (the claim is about a model that learned the pair):",
              "", "| model | learned | analogous right | rule failure |", "| --- | --- | --- | --- |"]
    for arm, r in rows.items():
        s = r["scores"]["all"]
        lines.append(f"| {arm} | {s['learned']}/{n} | {pct(s['analogous_if_learned'])} | "
                     f"{pct(s['rule_failure_if_learned'])} |")
    warn = [a for a in runs if rows.get(a) and rows[a]["scores"]["all"]["train"] < 0.8]
    if warn:
        lines += ["", f"**Warning:** {', '.join(warn)} answered under 80% of the training questions right: that arm "
                      "did not learn the training pairs, so its analogous numbers do not test the claim (train "
                      "longer: --epochs, or a higher learning rate)."]
    if runs:
        lines += ["", "Cost (training steps; from each run's summary.json; H100: the same FLOPs at "
                      f"{int(100 * next(iter(meta['cost'].values()))['h100_mfu'])}% MFU, "
                      "dianjing.eval.cost.projections):", "",
                  "| arm | steps | tokens (supervised) | est. FLOPs | wall time here | tokens/s | one H100-SXM |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for a, c in meta["cost"].items():
            lines.append(f"| {a} | {c['steps']} | {c['tokens']:,} ({c['supervised_tokens']:,}) | "
                         f"{c['estimated_flops']:.3g} | {c['train_wall_s']:.0f} s | {c['tokens_per_s']:.0f} | "
                         f"{c['h100_sxm_s']:.3g} s |")
    lines += ["", f"Wall time of the whole script: {meta['total_s']:.0f} s ("
              + ", ".join(f"{k} {v:.0f} s" for k, v in meta["timings"].items()) + ")."]
    show = [it["id"] for it in items][: args.examples]
    if show:
        lines += ["", "Analogous questions, first answers (✓ right, ✗ the training answer, · other):", "",
                  "| id | question | " + " | ".join(rows) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in rows) + " |"]
        for k, iid in enumerate(show):
            cells = []
            for r in rows.values():
                a = r["items"][k]["analogous"]
                mark = "✓" if a["right"] else "✗" if a["training_answer"] else "·"
                text = " ".join(a["answer"].split())[:40].replace("|", "\\|")
                cells.append(f"{mark} {text}")
            lines.append(f"| {iid} | {items[k]['analogous_q']} | " + " | ".join(cells) + " |")
    (res / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log("\n".join(lines))
    plot(args, rows, res / "results.png")


def plot(args, rows: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[experiments]'): no plot")
        return
    keys = [("train", "train"), ("paraphrase", "paraphrase"), ("analogous", "analogous\n(right)"),
            ("rule_failure", "analogous →\ntraining answer")]
    colors = {"base": "#bbbbbb", "pretrained": "#2171b5", "scratch": "#e6550d"}
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(rows))
    for j, (arm, r) in enumerate(rows.items()):
        ys = [r["scores"]["all"][k] for k, _ in keys]
        xs = [i + (j - (len(rows) - 1) / 2) * width for i in range(len(keys))]
        ax.bar(xs, ys, width, label=arm + (" (untuned)" if arm == "base" else ""), color=colors.get(arm))
        for x, y in zip(xs, ys):
            ax.text(x, y + 0.01, f"{100 * y:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(keys)), [label for _, label in keys])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(f"share of {rows[next(iter(rows))]['scores']['all']['n']} questions")
    ax.set_title(f"Pre-trained vs from scratch, same data and steps ({Path(args.model).name})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    log(f"plot: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m", help="the architecture and pre-trained weights (default "
                                                            "gemma-3-270m); the scratch arm uses only its config")
    ap.add_argument("--questions", default=str(HERE / "questions.jsonl"))
    ap.add_argument("--epochs", type=float, default=20, help="passes over the 40 pairs, both arms (default 20)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps, both arms (overrides --epochs)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-5, help="peak learning rate from pre-trained weights (5e-5)")
    ap.add_argument("--scratch-lr", type=float, default=5e-4,
                    help="peak learning rate from random weights (5e-4: at 5e-5 a random model barely moves in "
                         "this many steps, and an arm that has not learned the pairs tests nothing)")
    ap.add_argument("--seed", type=int, default=42, help="data order and the random init (train.seed)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--only", default=",".join(ARMS), help="arms to run: base (untuned, reference), pretrained, "
                                                          "scratch")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more config for both training arms, e.g. --set train.threads=2 (repeatable)")
    ap.add_argument("--examples", type=int, default=10, help="analogous answers shown in results.md")
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--results", default=None, help="folder for results.json/.md/.png (default: this folder, or "
                                                    "--work when --work is given)")
    args = ap.parse_args()
    if args.results is None:
        args.results = str(HERE) if Path(args.work).resolve() == (HERE / "work").resolve() else args.work
    only = [a.strip() for a in args.only.split(",") if a.strip()]
    unknown = sorted(set(only) - set(ARMS))
    if unknown or not only:
        sys.exit(f"--only {args.only}: the arms are {', '.join(ARMS)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    Path(args.results).mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    items = load_items(Path(args.questions))
    langs = {l: sum(1 for it in items if it["lang"] == l) for l in sorted({it["lang"] for it in items})}
    log(f"{len(items)} questions ({', '.join(f'{k} {v}' for k, v in langs.items())}), checked")
    files = write_files(items, work)
    runs, rows, timings = {}, {}, {}
    for arm in ARMS:
        if arm not in only:
            continue
        if arm != "base":
            runs[arm] = train_arm(args, arm, files["training"])
            timings[f"train {arm}"] = runs[arm]["command_s"]
        target = args.model if arm == "base" else runs[arm]["run"]
        log(f"== {arm}: answering {len(items)} × {len(SETS)} questions")
        gens, seconds = generate(args, arm, target, files)
        timings[f"answer {arm}"] = seconds
        rows[arm] = score(items, gens)
        s = rows[arm]["scores"]["all"]
        log(f"{arm}: train {pct(s['train'])}, paraphrase {pct(s['paraphrase'])}, analogous {pct(s['analogous'])}, "
            f"rule failure {pct(s['rule_failure'])}")
    meta = {"model": args.model, "languages": langs, "settings": vars(args), "timings": timings,
            "cost": {a: cost(info) for a, info in runs.items()}, "total_s": round(time.time() - t_all, 1),
            "rule": "right = the answer contains the key term or an alias (dianjing.eval.metrics.contains_answer); "
                    "rule failure = an analogous question answered with its item's training answer"}
    write_outputs(args, items, rows, runs, meta)
    log(f"total {time.time() - t_all:.0f}s; results in {args.results}")


if __name__ == "__main__":
    main()
