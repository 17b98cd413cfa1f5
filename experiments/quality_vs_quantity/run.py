"""Quality over quantity (LIMA; LLaMA 2's "quality is all you need"): does a small set of good pairs beat
the same set buried in a larger noisy one, for the same number of training steps?

From the two alpaca demo files (999 English, 1,000 simplified Chinese pairs; repeated questions dropped and
counted), a test set is held out first (--n-test, half of each language, never trained on and never a donor
of a shuffled answer). From the rest, three training sets, each half English and half Chinese:

    clean        --n-clean good pairs (default 400), answers as written
    clean+noisy  the same 400, plus --n-noisy other pairs (default 3 × n-clean = 1,200) whose answers are all
                 corrupted: a third truncated, a third shuffled, a third machine-noised (make_data.py)
    mixed        the same 1,600 questions; exactly round(--mixed-share × 1,600) of them (default 0.5: 800),
                 drawn uniformly at random from all 1,600, clean set included, corrupted the same three ways

Every arm trains Gemma 3 270M with LoRA (dianjing's defaults) for the same number of optimizer steps of the
same batch: the clean set's --epochs (2) worth, ⌈2 × 400 / 8⌉ = 100, so the larger sets see more distinct
examples (half of theirs) but get no more updates. Each arm, and the untuned base model for reference, then
answers the test questions greedily (`dianjing eval RUN --data test.json`): ROUGE-L, F1 and contains against
the reference answers, and the perplexity of the references. With --judge-url and --judge-model, an
OpenAI-compatible judge compares clean's answers with each other arm's (`dianjing judge`, both orders).

    python experiments/quality_vs_quantity/run.py                       # the experiment (not yet run; README)
    python experiments/quality_vs_quantity/run.py --only base,clean     # some arms
    python experiments/quality_vs_quantity/run.py --data-only           # write the data files, train nothing
    python experiments/quality_vs_quantity/run.py --judge-url http://127.0.0.1:8000/v1 --judge-model NAME
    python -c "from pathlib import Path; from tests.tiny import build_model; build_model(Path('/tmp/qq-smoke/tiny'))"
    python experiments/quality_vs_quantity/run.py --model /tmp/qq-smoke/tiny --steps 2 --n-clean 16 --n-test 4 \\
        --work /tmp/qq-smoke/w                                          # smoke test (seconds)

Writes results.json, results.md and results.png into this folder (with --work: into --work, so that a smoke
test never overwrites them); data files, run folders, generations and judgments go to --work (default
experiments/quality_vs_quantity/work/, not committed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from datetime import date
from pathlib import Path

import make_data as md  # this folder's make_data.py (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # experiments/common.py
from common import cli, fresh, log  # noqa: E402
ARMS = ("base", "clean", "clean+noisy", "mixed")  # base: the untuned model, scored for reference only
JUDGED = (("clean", "clean+noisy"), ("clean", "mixed"))
SCORES = ("rouge_l", "f1", "contains", "perplexity")


# -- the CLI, as a user types it ---------------------------------------------------------------------


def train_arm(args, arm: str, data: Path, steps: int) -> dict:
    out = Path(args.work) / "runs" / md.slug(arm)
    sets = ["data.eval_fraction=0", f"data.max_length={args.max_length}", f"train.batch_size={args.batch_size}",
            f"train.max_steps={steps}", f"train.seed={args.seed}", "train.save_every=1000000", *args.set]
    cmd = ["train", "--model", args.model, "--data", str(data), "--format", "alpaca", "-o", str(out)]
    for s in sets:
        cmd += ["--set", s]
    # a finished run of the same command on the same data is scored again, not retrained (--reuse)
    key = hashlib.sha1((json.dumps(cmd) + hashlib.sha1(data.read_bytes()).hexdigest()).encode()).hexdigest()
    keyfile = out.parent / f"{md.slug(arm)}.key"
    if args.reuse and (out / "summary.json").exists() and keyfile.exists() and keyfile.read_text() == key:
        log(f"== {arm}: reusing the finished run {out} (same command, same data)")
        seconds = None
    else:
        fresh(out)
        log(f"== {arm}: LoRA, {steps} steps of batch {args.batch_size} on {data.name}")
        seconds = round(cli(cmd, Path(args.work) / "logs" / f"train-{md.slug(arm)}.log"), 1)
        keyfile.write_text(key)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    k = max(1, min(5, len(losses) // 4))
    return {"run": str(out), "settings": sets, "command_s": seconds, "summary": summary,
            "loss_first": sum(losses[:k]) / k if losses else None,
            "loss_last": sum(losses[-k:]) / k if losses else None}


def evaluate(args, arm: str, target: str, test: Path) -> tuple[dict, Path, float]:
    """`dianjing eval` of `target` on the test set: its result JSON, the generations file and the seconds."""
    out = Path(args.work) / "eval" / md.slug(arm) / "test.json"
    seconds = cli(["eval", target, "--data", str(test), "--format", "alpaca", "--max-new-tokens",
                   str(args.max_new_tokens), "--batch-size", str(args.eval_batch), "--out", str(out)],
                  Path(args.work) / "logs" / f"eval-{md.slug(arm)}.log")
    return json.loads(out.read_text(encoding="utf-8")), out.with_suffix(".jsonl"), seconds


def judge(args, a: str, b: str, answers: dict[str, Path], questions: Path) -> tuple[dict, float]:
    """`dianjing judge` of a's answers against b's: the answers `dianjing eval` generated (the same greedy
    answers the reference scores are computed on, not generated a second time), judged in both orders."""
    out = Path(args.work) / "judge" / f"{md.slug(a)}-vs-{md.slug(b)}"
    cmd = ["judge", str(answers[a]), str(answers[b]), "--questions", str(questions), "--judge-model",
           args.judge_model, "--max-new-tokens", str(args.max_new_tokens), "-o", str(out)]
    for url in args.judge_url:
        cmd += ["--judge-url", url]
    seconds = cli(cmd, Path(args.work) / "logs" / f"judge-{md.slug(a)}-vs-{md.slug(b)}.log")
    return json.loads((out / "result.json").read_text(encoding="utf-8")), seconds


def cost(summary: dict) -> dict:
    """A trained arm's cost from its summary.json, and the same FLOPs on one H100 (dianjing.eval.cost)."""
    from dianjing.eval.cost import DEFAULT_MFU, projections

    h100 = next(p for p in projections(summary.get("estimated_flops")) if p["accelerator"] == "H100-SXM")
    return {k: summary.get(k) for k in ("steps", "tokens", "supervised_tokens", "estimated_flops", "tokens_per_s",
                                        "device", "mfu")} | {
        "train_wall_s": summary.get("wall_time_s"), "h100_sxm_s": h100["seconds"], "h100_mfu": DEFAULT_MFU}


# -- outputs ----------------------------------------------------------------------------------------
def num(x, fmt: str = ".1f") -> str:
    return "–" if x is None else format(x, fmt)


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def short(text: str, n: int = 160) -> str:
    t = " ".join(text.split()).replace("|", "\\|")
    return t if len(t) <= n else t[:n] + " …"


def write_outputs(args, meta: dict, rows: dict, judged: dict) -> None:
    res = Path(args.results)
    (res / "results.json").write_text(json.dumps({"date": meta.get("date") or str(date.today()), **meta, "arms": rows,
                                                  "judge": judged}, indent=1, ensure_ascii=False),
                                      encoding="utf-8")
    t = meta["data"]["test"]
    lines = [f"Test set: {t['examples']} held-out pairs ({', '.join(f'{k} {v}' for k, v in t['languages'].items())}), "
             f"never trained on. Model {args.model}, LoRA (dianjing's defaults), every arm {meta['steps']} steps of "
             f"batch {args.batch_size}, data.max_length {args.max_length}, seed {args.seed}; answers greedy, at most "
             f"{args.max_new_tokens} new tokens. ROUGE-L, F1 and contains: % against the reference answers; "
             "ref. perplexity: of the reference answers under each model (lower is better).", "",
             "| arm | examples | corrupted | steps (epochs) | ROUGE-L | F1 | contains | ref. perplexity | "
             "train time | est. FLOPs | one H100-SXM |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for arm, r in rows.items():
        s = r["eval"]["scores"]
        c = r.get("cost")
        d = meta["data"]["sets"].get(arm)
        ep = f" ({c['steps'] * args.batch_size / d['examples']:.2g})" if c and d and c.get("steps") else ""
        lines.append(
            f"| {arm}{' (untuned, reference)' if arm == 'base' else ''} | {d['examples'] if d else '–'} | "
            f"{pct(d['corrupted_share']) if d else '–'} | {c['steps'] if c else '–'}{ep} | "
            f"**{num(s.get('rouge_l'))}** | {num(s.get('f1'))} | {num(s.get('contains'))} | "
            f"**{num(s.get('perplexity'), '.2f')}** | "
            + (f"{c['train_wall_s']:.0f} s | {c['estimated_flops']:.3g} | {c['h100_sxm_s']:.3g} s |" if c
               else "– | – | – |"))
    langs = list(t["languages"])
    lines += ["", "By language (ROUGE-L / F1 / ref. perplexity):", "",
              "| arm | " + " | ".join(langs) + " |", "| --- | " + " | ".join("---" for _ in langs) + " |"]
    for arm, r in rows.items():
        cats = r["eval"].get("by_category", {})
        lines.append(f"| {arm} | " + " | ".join(
            f"{num(cats.get(l, {}).get('rouge_l'))} / {num(cats.get(l, {}).get('f1'))} / "
            f"{num(cats.get(l, {}).get('perplexity'), '.2f')}" for l in langs) + " |")
    lines += paired_lines(rows)
    lines += ["", "## Judge", ""]
    if judged.get("skipped"):
        lines.append(f"Not run: {judged['skipped']}.")
    else:
        lines += [f"Judge {args.judge_model} ({', '.join(args.judge_url)}), pairwise, both orders (a verdict that "
                  "flips with the order is a tie); win rate = (wins + ½ ties) / judged, of the first arm; 95% "
                  "bootstrap interval.", "",
                  "| pair | judged | wins / ties / losses | win rate of the first | 95% interval | orders agree | "
                  + " | ".join(f"win rate, {l}" for l in langs) + " |",
                  "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in langs) + " |"]
        for pair, j in judged.items():
            if "skipped" in j:
                lines.append(f"| {pair} | not run: {j['skipped']} |")
                continue
            s = j["results"]
            ci = s.get("ci") or [None, None]
            lines.append(f"| {pair} | {s['n']} | {s['wins']} / {s['ties']} / {s['losses']} | "
                         f"**{pct(s['win_rate'])}** | {pct(ci[0])}–{pct(ci[1])} | {pct(s.get('agreement'))} | "
                         + " | ".join(pct(s.get("by_category", {}).get(l, {}).get("win_rate")) for l in langs) + " |")
            if s.get("unjudged"):
                lines.append(f"| | {s['unjudged']} unjudged: {s.get('unjudged_by_reason')} |")
    lines += ["", "## Data", "", f"Read from {meta['data']['dir']}: {meta['data']['read']} usable pairs; left out: "
              + (", ".join(f"{n} × {why}" for why, n in meta["data"]["dropped"].items()) or "none") + ".", "",
              "| set | examples | en / zh | clean | truncated | shuffled | noised | unchanged by its corruption | "
              "mean answer chars |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, d in meta["data"]["sets"].items():
        k = d["by_kind"]
        lines.append(f"| {name} | {d['examples']} | {d['languages'].get('en', 0)} / {d['languages'].get('zh', 0)} | "
                     f"{k['none']} | {k['truncate']} | {k['shuffle']} | {k['noise']} | {d['unchanged_by_corruption']} "
                     f"| {d['answer_chars_mean']} |")
    lines += ["", "One real example of each corruption (clean+noisy; the first 160 characters):", "",
              "| corruption | record | question | original answer | corrupted answer |",
              "| --- | --- | --- | --- | --- |"]
    for e in meta["data"]["examples"]:
        lines.append(f"| {e['kind']} | {e['id']} | {short(e['question'], 80)} | {short(e['original'])} | "
                     f"{short(e['corrupted'])} |")
    lines += ["", f"Wall time of the whole script: {meta['total_s']:.0f} s ("
              + ", ".join(f"{k} {v:.0f} s" for k, v in meta["timings"].items()) + ")."]
    (res / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log("\n".join(lines))
    plot(args, rows, meta, res / "results.png")


PAIRS = (("clean", "clean+noisy"), ("clean", "mixed"), ("mixed", "clean+noisy"), ("clean", "base"))


def per_question(path: str) -> dict[str, dict]:
    """One arm's per-question scores, by question id, from the generations file `dianjing eval` wrote."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        out[r["id"]] = {"category": r["category"], **r["scores"]}
    return out


def paired(rows: dict) -> dict:
    """The per-question difference between two arms on the same test questions: mean and 95% bootstrap
    interval of ROUGE-L (points) and of the reference's mean per-token loss (nats), and how many
    questions each arm scores higher on."""
    from dianjing.eval.judge_stats import bootstrap_interval

    got = {}
    for a, b in PAIRS:
        if a not in rows or b not in rows:
            continue
        qa, qb = per_question(rows[a]["eval"]["generations"]), per_question(rows[b]["eval"]["generations"])
        ids = sorted(set(qa) & set(qb))
        d_rouge = [100 * (qa[i]["rouge_l"] - qb[i]["rouge_l"]) for i in ids]
        d_nll = [qa[i]["nll"] - qb[i]["nll"] for i in ids]
        got[f"{a} − {b}"] = {
            "questions": len(ids),
            "rouge_l": round(sum(d_rouge) / len(ids), 2), "rouge_l_ci": bootstrap_interval(d_rouge, 2000),
            "higher": sum(x > 0 for x in d_rouge), "lower": sum(x < 0 for x in d_rouge),
            "nll": round(sum(d_nll) / len(ids), 4), "nll_ci": bootstrap_interval(d_nll, 2000),
            "nll_lower": sum(x < 0 for x in d_nll)}
    return got


def paired_lines(rows: dict) -> list[str]:
    got = paired(rows)
    if not got:
        return []
    lines = ["", "## Paired differences, question by question", "",
             "Every arm answered the same test questions, so arms are compared question by question: the mean "
             "difference (first arm minus second) with a 95% percentile bootstrap interval over the questions "
             "(2,000 resamples, seed 0). ROUGE-L in points (higher is better for the first arm); reference loss in "
             "nats per reference token, averaged over questions (negative: the first arm finds the references "
             "more likely). An interval that includes 0 is no evidence of a difference.", "",
             "| first − second | questions | ROUGE-L difference | 95% interval | first higher / lower | "
             "reference loss difference | 95% interval | first's loss lower on |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for pair, g in got.items():
        rc, nc = g["rouge_l_ci"], g["nll_ci"]
        lines.append(f"| {pair} | {g['questions']} | **{g['rouge_l']:+.2f}** | {rc[0]:+.2f} … {rc[1]:+.2f} | "
                     f"{g['higher']} / {g['lower']} | **{g['nll']:+.4f}** | {nc[0]:+.4f} … {nc[1]:+.4f} | "
                     f"{g['nll_lower']} of {g['questions']} |")
    lines += ["", "Mean answer length in tokens (the answers the scores are computed on): "
              + ", ".join(f"{arm} {r['eval']['scores'].get('answer_tokens_mean')}" for arm, r in rows.items()) + "."]
    return lines


def plot(args, rows: dict, meta: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[experiments]'): no plot")
        return
    colors = {"base": "#bbbbbb", "clean": "#2171b5", "clean+noisy": "#e6550d", "mixed": "#fdae6b"}
    names = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, (key, label, fmt) in zip(axes, (("rouge_l", "ROUGE-L on the test references (%, higher is better)", ".1f"),
                                            ("perplexity", "perplexity of the test references (lower is better)",
                                             ".2f"))):
        ys = [rows[a]["eval"]["scores"].get(key) or 0 for a in names]
        bars = ax.bar(range(len(names)), ys, color=[colors.get(a) for a in names])
        for b, y in zip(bars, ys):
            ax.text(b.get_x() + b.get_width() / 2, y, format(y, fmt), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), [a + (f"\n{pct(meta['data']['sets'][a]['corrupted_share'])} corrupted"
                                               if a in meta["data"]["sets"] else "\n(untuned)") for a in names],
                      fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.margins(y=0.15)
    fig.suptitle(f"Quality vs quantity: {meta['steps']} steps each, {meta['data']['test']['examples']} test pairs "
                 f"({Path(args.model).name})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    log(f"plot: {out}")


# -- main -------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m", help="the base model of every arm (default gemma-3-270m)")
    ap.add_argument("--data-dir", default="/work/shared/data/instruct",
                    help="the folder of alpaca_en_demo.json and alpaca_zh_demo.json")
    ap.add_argument("--n-test", type=int, default=200, help="held-out test pairs, half of each language (200)")
    ap.add_argument("--n-clean", type=int, default=400, help="pairs of the clean set, half of each language (400)")
    ap.add_argument("--n-noisy", type=int, default=None,
                    help="corrupted pairs added to the clean set in clean+noisy (default 3 × --n-clean)")
    ap.add_argument("--mixed-share", type=float, default=0.5,
                    help="share of mixed's records that are corrupted, drawn at random from all (default 0.5)")
    ap.add_argument("--epochs", type=float, default=2, help="the steps budget: this many passes over the clean "
                                                            "set (default 2), the same steps for every arm")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps of every arm (overrides --epochs)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=384, help="data.max_length: longer examples are cut (384)")
    ap.add_argument("--seed", type=int, default=42, help="the split, the corruptions and train.seed (default 42)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--only", default=",".join(ARMS), help=f"arms to run, comma-separated: {', '.join(ARMS)}")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more config for every training arm, e.g. --set train.threads=2 (repeatable)")
    ap.add_argument("--judge-url", action="append", default=[], metavar="URL",
                    help="an OpenAI-compatible judge (repeatable: servers of the same model share the requests)")
    ap.add_argument("--judge-model", default=None, help="the model name the judge's server serves")
    ap.add_argument("--reuse", action="store_true",
                    help="score a finished run of the same command and data again instead of retraining it")
    ap.add_argument("--data-only", action="store_true", help="write the data files into --work and stop")
    ap.add_argument("--tables-only", action="store_true",
                    help="write results.md and results.png again from results.json and the answers in --work "
                         "(nothing is trained, answered or judged)")
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--results", default=None, help="folder for results.json/.md/.png (default: this folder, or "
                                                    "--work when --work is given)")
    args = ap.parse_args()
    if args.results is None:
        args.results = str(HERE) if Path(args.work).resolve() == (HERE / "work").resolve() else args.work
    if args.tables_only:
        saved = json.loads((Path(args.results) / "results.json").read_text(encoding="utf-8"))
        meta = {k: saved[k] for k in ("date", "model", "steps", "settings", "data", "timings", "total_s")}
        for k in ("batch_size", "max_length", "seed", "max_new_tokens", "judge_model", "judge_url"):
            setattr(args, k, meta["settings"][k])
        write_outputs(args, meta, saved["arms"], saved["judge"])
        return
    only = [a.strip() for a in args.only.split(",") if a.strip()]
    if not only or set(only) - set(ARMS):
        sys.exit(f"--only {args.only}: the arms are {', '.join(ARMS)}")
    if bool(args.judge_url) != bool(args.judge_model):
        sys.exit("--judge-url and --judge-model go together: give both to judge, or neither to skip the judge")
    n_noisy = 3 * args.n_clean if args.n_noisy is None else args.n_noisy
    for name, v in (("--n-test", args.n_test), ("--n-clean", args.n_clean)):
        if v < 2:
            sys.exit(f"{name} {v}: at least 2 (one pair of each language)")
    if n_noisy < 0 or not 0 <= args.mixed_share <= 1:
        sys.exit("--n-noisy is at least 0 and --mixed-share between 0 and 1")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    Path(args.results).mkdir(parents=True, exist_ok=True)
    t_all = time.time()

    pairs, dropped = md.load_pairs(Path(args.data_dir))
    log(f"{len(pairs)} usable pairs from {args.data_dir}"
        + "".join(f"; {n} × {why}" for why, n in dropped.items()))
    parts = md.split(pairs, n_test=args.n_test, n_clean=args.n_clean, n_noisy=n_noisy, seed=args.seed)
    sets = md.build_sets(parts, mixed_share=args.mixed_share, seed=args.seed)
    files = md.write_files(work, parts, sets)
    info = {name: md.describe(rows) for name, rows in sets.items()}
    for name, d in info.items():
        log(f"{name}: {d['examples']} pairs, {d['corrupted']} corrupted {d['by_kind']}"
            + (f", {d['unchanged_by_corruption']} left unchanged by their corruption (too short)"
               if d["unchanged_by_corruption"] else ""))
    steps = args.steps or max(1, math.ceil(args.epochs * args.n_clean / args.batch_size))
    data_meta = {"dir": args.data_dir, "read": len(pairs), "dropped": dict(dropped),
                 "test": {"examples": len(parts["test"]), "languages": md.languages(parts["test"])},
                 "pool": len(parts["pool"]), "sets": info, "examples": md.examples(sets, parts),
                 "files": {k: str(v) for k, v in files.items()},
                 "corruptions": {"truncate": f"first ceil(f*n) of n units, f ~ U{md.TRUNCATE_KEEP}",
                                 "shuffle": "the answer of another same-language question of the training pool",
                                 "noise": f"per unit p={md.WORD_RATE}: delete / swap with next / repeat; per letter "
                                          f"of Latin words p={md.CHAR_RATE}: delete / swap with next",
                                 "unit": "one Chinese character, or a run of other non-space characters"}}
    log(f"data files in {work / 'data'}; every arm trains {steps} steps of batch {args.batch_size}")
    if args.data_only:
        (work / "data" / "summary.json").write_text(json.dumps(data_meta, indent=1, ensure_ascii=False),
                                                    encoding="utf-8")
        log(f"--data-only: stopped; what was made is in {work / 'data' / 'summary.json'}")
        return

    rows, timings, answers = {}, {}, {}
    for arm in ARMS:
        if arm not in only:
            continue
        row: dict = {}
        if arm != "base":
            tr = train_arm(args, arm, files[arm], steps)
            row.update(train=tr, cost=cost(tr["summary"]))
            if tr["command_s"] is not None:
                timings[f"train {arm}"] = tr["command_s"]
        target = args.model if arm == "base" else row["train"]["run"]
        log(f"== {arm}: answering {len(parts['test'])} test questions")
        result, answers[arm], seconds = evaluate(args, arm, target, files["test"])
        timings[f"answer {arm}"] = seconds
        row["eval"] = {k: result.get(k) for k in ("metric", "scores", "by_category", "generation", "prompts_cut",
                                                  "generations")}
        s = result["scores"]
        log(f"{arm}: ROUGE-L {num(s.get('rouge_l'))}, F1 {num(s.get('f1'))}, ref. perplexity "
            f"{num(s.get('perplexity'), '.2f')}")
        rows[arm] = row

    judged: dict = {}
    if not args.judge_url:
        judged["skipped"] = "no --judge-url / --judge-model given"
    else:
        for a, b in JUDGED:
            if a not in answers or b not in answers:
                judged[f"{a} vs {b}"] = {"skipped": f"{a if a not in answers else b} was not run (--only)"}
                continue
            log(f"== judge: {a} vs {b}")
            judged[f"{a} vs {b}"], timings[f"judge {a} vs {b}"] = judge(args, a, b, answers, files["questions"])
    meta = {"model": args.model, "steps": steps, "settings": vars(args), "data": data_meta, "timings": timings,
            "total_s": round(time.time() - t_all, 1)}
    write_outputs(args, meta, rows, judged)
    log(f"total {time.time() - t_all:.0f} s; results in {args.results}")


if __name__ == "__main__":
    main()
