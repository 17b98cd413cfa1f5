"""Chain-of-thought data (Flan 2022): does training on worked steps help a small model answer multi-step word
problems, and does "think step by step" change what it writes?

A seeded generator in this script writes small 2–3 step arithmetic word problems, half in Traditional Chinese
(zh-TW), half in English, each with a short rationale ("3 × 4 = 12; 12 + 12 = 24; 24 - 5 = 19") and an integer
answer. Eight templates: six make the training problems, and the test set is half new problems of those six
(numbers never seen with that template in training) and half problems of two templates held out of training.

Arms, all LoRA on Gemma 3 270M by default, on the same problems for the same number of steps:

    base       the untuned model, for reference
    direct     output = the answer line only ("答案：19" / "Answer: 19")
    rationale  output = the rationale, then the same answer line
    mixed      (not run by default) half the problems direct with the plain prompt, half with rationale and
               "think step by step" in the prompt: the Flan 2022 mix, where the trigger asks for the steps

Every model answers each test problem twice, greedily: the plain question, and the question with
"請一步一步思考。" / "Let's think step by step." appended. One fixed rule scores an answer: the first integer after
the last "答案"/"Answer" in it, else its last integer; right when it equals the true answer.

    python experiments/chain_of_thought/run.py                      # the experiment (not yet run; see README)
    python experiments/chain_of_thought/run.py --only base,direct   # some arms
    python -c "from pathlib import Path; from tests.tiny import build_model; build_model(Path('/tmp/cot-smoke/tiny'))"
    python experiments/chain_of_thought/run.py --model /tmp/cot-smoke/tiny --steps 2 --n-train 16 --n-test 8 \\
        --work /tmp/cot-smoke/w                                     # smoke test

Writes results.json, results.md and results.png into this folder (with --work: into --work, so that a smoke
test never overwrites them); the generated problems, training files, run folders and every answer go to --work
(default experiments/chain_of_thought/work/, not committed).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
import unicodedata
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # experiments/common.py
from common import cli, fresh, log  # noqa: E402
ARMS = ("base", "direct", "rationale", "mixed")
DEFAULT_ARMS = ("base", "direct", "rationale")
MODES = ("plain", "cot")
LANGS = ("zh", "en")
TRIGGER = {"zh": "請一步一步思考。", "en": "Let's think step by step."}
ANSWER_LINE = {"zh": "答案：{}", "en": "Answer: {}"}


# -- the problem generator --------------------------------------------------------------------------
NAMES = {"zh": ["小明", "小華", "小美", "阿志", "佳佳", "志豪", "怡君", "家豪"],
         "en": ["Tom", "Amy", "Ben", "Lily", "Sam", "Mia", "Jack", "Emma"]}
FRUITS = [("蘋果", "apples"), ("橘子", "oranges"), ("芭樂", "guavas"), ("李子", "plums"), ("桃子", "peaches")]


def mul(a: int, b: int) -> tuple[str, int]:
    return f"{a} × {b} = {a * b}", a * b


def add(a: int, b: int) -> tuple[str, int]:
    return f"{a} + {b} = {a + b}", a + b


def sub(a: int, b: int) -> tuple[str, int]:
    if b >= a:
        raise ValueError(f"{a} - {b} is not positive")
    return f"{a} - {b} = {a - b}", a - b


def div(a: int, b: int) -> tuple[str, int]:
    if a % b:
        raise ValueError(f"{a} ÷ {b} is not an integer")
    return f"{a} ÷ {b} = {a // b}", a // b


@dataclass(frozen=True)
class Template:
    """One kind of problem: how its numbers are drawn, its question in each language, and its steps."""
    name: str
    draw: Callable[[random.Random], dict]  # the numbers, already within the template's constraints
    recipe: tuple  # the steps: (operation, left, right), a number's name or "_" for the step before's result
    text: dict[str, str]  # language → str.format pattern over the numbers and the names

    def steps(self, nums: dict) -> list[tuple[str, int]]:
        """The rationale's steps as (text, value); the last value is the answer."""
        out: list[tuple[str, int]] = []
        for op, a, b in self.recipe:
            left, right = (out[-1][1] if k == "_" else nums[k] for k in (a, b))
            out.append(op(left, right))
        return out


def _bags(r):
    x, b, c = r.randint(2, 20), r.randint(2, 6), r.randint(2, 9)
    return {"x": x, "b": b, "c": c, "d": r.randint(1, min(15, x + b * c - 1))}


def _pencils(r):
    b, c = r.randint(2, 6), r.randint(2, 15)
    return {"b": b, "c": c, "m": r.randint(b * c + 1, b * c + 60)}


def _pages(r):
    p, d = r.randint(5, 20), r.randint(2, 7)
    return {"p": p, "d": d, "n": r.randint(p * d + 5, p * d + 120)}


def _chairs(r):
    return {"r": r.randint(3, 12), "s": r.randint(3, 12), "e": r.randint(1, 20)}


def _share(r):
    k = r.randint(2, 8)
    return {"k": k, "a": k * r.randint(2, 6), "b": r.randint(2, 6)}


def _shop(r):
    b, c, d = r.randint(2, 5), r.randint(8, 30), r.randint(15, 45)
    return {"b": b, "c": c, "d": d, "m": r.randint(b * c + d + 1, b * c + d + 80)}


def _times(r):
    return {"x": r.randint(3, 25), "k": r.randint(2, 5)}


def _candy(r):
    b, c = r.randint(2, 5), r.randint(2, 6)
    return {"b": b, "c": c, "x": r.randint(b * c + 1, b * c + 40), "d": r.randint(1, 15)}


TEMPLATES = {t.name: t for t in [
    Template("bags", _bags, ((mul, "b", "c"), (add, "x", "_"), (sub, "_", "d")), {
        "zh": "{name}有 {x} 顆{fruit}，又買了 {b} 袋，每袋 {c} 顆，後來吃掉 {d} 顆。{name}現在有幾顆{fruit}？",
        "en": "{name} has {x} {fruit}. {name} buys {b} bags with {c} {fruit} in each bag, then eats {d}. "
              "How many {fruit} does {name} have now?"}),
    Template("pencils", _pencils, ((mul, "b", "c"), (sub, "m", "_")), {
        "zh": "{name}有 {m} 元，買了 {b} 枝鉛筆，每枝 {c} 元。{name}還剩多少元？",
        "en": "{name} has {m} dollars and buys {b} pencils at {c} dollars each. How many dollars does {name} "
              "have left?"}),
    Template("pages", _pages, ((mul, "p", "d"), (sub, "n", "_")), {
        "zh": "一本書有 {n} 頁，{name}每天讀 {p} 頁，讀了 {d} 天。還剩幾頁沒讀？",
        "en": "A book has {n} pages. {name} reads {p} pages a day for {d} days. How many pages are left to read?"}),
    Template("chairs", _chairs, ((mul, "r", "s"), (add, "_", "e")), {
        "zh": "教室裡有 {r} 排椅子，每排 {s} 張，{name}又搬來 {e} 張。教室裡一共有幾張椅子？",
        "en": "A classroom has {r} rows of chairs with {s} chairs in each row. {name} brings in {e} more "
              "chairs. How many chairs are there in all?"}),
    Template("share", _share, ((mul, "a", "b"), (div, "_", "k")), {
        "zh": "一盒有 {a} 塊餅乾，{name}買了 {b} 盒，平分給 {k} 位同學。每位同學分到幾塊？",
        "en": "A box holds {a} cookies. {name} buys {b} boxes and shares the cookies equally among {k} "
              "friends. How many cookies does each friend get?"}),
    Template("shop", _shop, ((mul, "b", "c"), (add, "_", "d"), (sub, "m", "_")), {
        "zh": "{name}帶了 {m} 元去商店，買了 {b} 個麵包，每個 {c} 元，又買了一瓶 {d} 元的牛奶。{name}還剩多少元？",
        "en": "{name} takes {m} dollars to the shop, buys {b} loaves of bread at {c} dollars each and a "
              "bottle of milk for {d} dollars. How many dollars are left?"}),
    # held out of training: the same operations in sentences the training set never uses
    Template("times", _times, ((mul, "x", "k"), (add, "x", "_")), {
        "zh": "{name}有 {x} 張貼紙，{name2}的貼紙是{name}的 {k} 倍。兩人一共有幾張貼紙？",
        "en": "{name} has {x} stickers. {name2} has {k} times as many stickers as {name}. How many stickers "
              "do they have together?"}),
    Template("candy", _candy, ((mul, "b", "c"), (sub, "x", "_"), (add, "_", "d")), {
        "zh": "{name}有 {x} 顆糖果，分給 {b} 位朋友，每人 {c} 顆，之後媽媽又給了{name} {d} 顆。{name}現在有幾顆糖果？",
        "en": "{name} has {x} candies and gives {c} candies to each of {b} friends. Then {name}'s mother "
              "gives {name} {d} more. How many candies does {name} have now?"}),
]}
SEEN = ("bags", "pencils", "pages", "chairs", "share", "shop")
HELD_OUT = ("times", "candy")


def rationale(steps: list[tuple[str, int]]) -> str:
    return "; ".join(text for text, _ in steps)


def make_problem(r: random.Random, template: str, lang: str) -> dict:
    t = TEMPLATES[template]
    nums = t.draw(r)
    steps = t.steps(nums)  # raises ValueError if a draw broke the template's constraints: a bug here, not data
    name, name2 = r.sample(NAMES[lang], 2)
    fruit = r.choice(FRUITS)[0 if lang == "zh" else 1]
    question = t.text[lang].format(name=name, name2=name2, fruit=fruit, **nums)
    return {"lang": lang, "template": template, "seen": template in SEEN, "steps": len(steps), "numbers": nums,
            "question": question, "rationale": rationale(steps), "answer": steps[-1][1]}


def generate_sets(n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """The training and test problems, deterministic for a seed. Languages alternate; test problems alternate
    between the training templates and the held-out ones. No test problem repeats a training problem's
    numbers under the same template (in either language), and no question appears twice."""
    taken: set[tuple] = set()
    questions: set[str] = set()

    def draw(r: random.Random, template: str, lang: str, what: str) -> dict:
        for _ in range(1000):
            p = make_problem(r, template, lang)
            key = (template, tuple(sorted(p["numbers"].items())))
            if key not in taken and p["question"] not in questions:
                taken.add(key)
                questions.add(p["question"])
                return p
        sys.exit(f"could not draw a new {what} problem of template '{template}' after 1000 tries: the template's "
                 "number ranges are nearly used up; ask for fewer problems (--n-train, --n-test)")

    r = random.Random(f"cot-train-{seed}")
    train = []
    for i in range(n_train):
        p = draw(r, r.choice(SEEN), LANGS[i % 2], "training")
        train.append({"id": f"train-{i:04d}-{p['lang']}-{p['template']}", "split": "train", **p})
    r = random.Random(f"cot-test-{seed}")
    test = []
    for i in range(n_test):
        group = SEEN if (i // 2) % 2 == 0 else HELD_OUT
        p = draw(r, r.choice(group), LANGS[i % 2], "test")
        test.append({"id": f"test-{i:04d}-{p['lang']}-{p['template']}", "split": "test", **p})
    return train, test


def answer_line(p: dict) -> str:
    return ANSWER_LINE[p["lang"]].format(p["answer"])


def with_trigger(p: dict) -> str:
    return p["question"] + "\n" + TRIGGER[p["lang"]]


def write_files(train: list[dict], test: list[dict], work: Path) -> dict[str, Path]:
    """problems.json (every problem with its template, numbers, rationale and answer), one alpaca training
    file per trained arm, and the two alpaca test files (plain and with the trigger; id and language as
    category; the reference is the answer line, which dianjing's own scores use and this script does not)."""
    def dump(p: Path, rows: list[dict]) -> Path:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return p

    data = work / "data"
    dump(data / "problems.json", train + test)
    with_steps = lambda p: p["rationale"] + "\n" + answer_line(p)  # noqa: E731
    files = {
        "direct": dump(data / "train-direct.json",
                       [{"instruction": p["question"], "input": "", "output": answer_line(p)} for p in train]),
        "rationale": dump(data / "train-rationale.json",
                          [{"instruction": p["question"], "input": "", "output": with_steps(p)} for p in train]),
        "mixed": dump(data / "train-mixed.json",
                      [{"instruction": with_trigger(p), "input": "", "output": with_steps(p)} if k % 4 >= 2 else
                       {"instruction": p["question"], "input": "", "output": answer_line(p)}
                       for k, p in enumerate(train)]),  # k % 4: both languages in both halves
    }
    for mode in MODES:
        files[mode] = dump(data / "eval" / f"test-{mode}.json",
                           [{"id": p["id"], "category": p["lang"], "input": "", "output": answer_line(p),
                             "instruction": with_trigger(p) if mode == "cot" else p["question"]} for p in test])
    return files


# -- training and answering, through the CLI ---------------------------------------------------------


def train_arm(args, arm: str, data: Path) -> dict:
    out = Path(args.work) / "runs" / arm
    fresh(out)
    sets = ["data.eval_fraction=0", f"train.batch_size={args.batch_size}", f"train.epochs={args.epochs}",
            f"train.seed={args.train_seed}", "train.save_every=1000000",
            *([f"train.lr={args.lr}"] if args.lr else []),
            *([f"train.max_steps={args.steps}"] if args.steps else []), *args.set]
    cmd = ["train", "--model", args.model, "--data", str(data), "--format", "alpaca", "-o", str(out)]
    for s in sets:
        cmd += ["--set", s]
    log(f"== {arm}: LoRA on {data.name}")
    seconds = cli(cmd, Path(args.work) / f"train-{arm}.log")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    losses = [json.loads(l)["loss"] for l in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    k = max(1, min(5, len(losses) // 4))
    return {"run": str(out), "data": str(data), "settings": sets, "command_s": round(seconds, 1),
            "summary": summary, "loss_first": sum(losses[:k]) / k if losses else None,
            "loss_last": sum(losses[-k:]) / k if losses else None, "losses": losses}


def answer(args, arm: str, target: str, files: dict[str, Path]) -> tuple[dict, float]:
    """Greedy answers of `target` to the test problems, plain and with the trigger: {mode: {id: answer}}."""
    out = Path(args.work) / "eval" / arm
    out.mkdir(parents=True, exist_ok=True)
    seconds = cli(["eval", target, "--data", *(str(files[m]) for m in MODES), "--format", "alpaca",
                   "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.eval_batch),
                   "--no-perplexity", "--out", str(out)], Path(args.work) / f"eval-{arm}.log")
    gens = {}
    for m in MODES:
        path = out / f"{files[m].stem}.jsonl"
        rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
        gens[m] = {r["id"]: r["answer"] or "" for r in rows}
    return gens, seconds


# -- scoring ----------------------------------------------------------------------------------------
MARKER = re.compile(r"答案|answer", re.IGNORECASE)
STEP = re.compile(r"(\d+)\s*([+\-×x*÷/])\s*(\d+)\s*=\s*(\d+)")


def final_answer(text: str) -> int | None:
    """The fixed rule: the first integer after the last "答案"/"Answer" (any case), else the last integer in
    the text; None when there is no integer. Full-width digits and signs count (NFKC)."""
    t = unicodedata.normalize("NFKC", text)
    marks = list(MARKER.finditer(t))
    if marks:
        m = re.search(r"\d+", t[marks[-1].end():])
        if m:
            return int(m.group())
    nums = re.findall(r"\d+", t)
    return int(nums[-1]) if nums else None


def step_checks(text: str) -> tuple[int, int]:
    """How many "a op b = c" steps the text writes, and how many of them are arithmetically right."""
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b, "x": lambda a, b: a * b,
           "*": lambda a, b: a * b, "÷": lambda a, b: a / b if b else None, "/": lambda a, b: a / b if b else None}
    found = STEP.findall(unicodedata.normalize("NFKC", text))
    return len(found), sum(1 for a, op, b, c in found if ops[op](int(a), int(b)) == int(c))


def score(test: list[dict], gens: dict) -> dict:
    """Per prompt mode: accuracy overall, per language and per template group; how often the answer writes a
    step ("=") and the answer line; its mean length; and each problem's answer and verdict."""
    out = {}
    for mode in MODES:
        items = []
        for p in test:
            a = gens[mode].get(p["id"], "")
            got = final_answer(a)
            n_steps, right_steps = step_checks(a)
            items.append({"id": p["id"], "lang": p["lang"], "seen": p["seen"], "answer": a, "parsed": got,
                          "right": got == p["answer"], "has_step": "=" in unicodedata.normalize("NFKC", a),
                          "has_marker": bool(MARKER.search(a)), "chars": len(a.strip()),
                          "steps_written": n_steps, "steps_right": right_steps})
        groups = {"all": items, **{l: [i for i in items if i["lang"] == l] for l in LANGS},
                  "seen templates": [i for i in items if i["seen"]],
                  "held-out templates": [i for i in items if not i["seen"]]}
        s = {}
        for g, rows in groups.items():
            n = len(rows)
            share = lambda key: (sum(1 for r in rows if r[key]) / n) if n else None  # noqa: E731
            written = sum(r["steps_written"] for r in rows)
            s[g] = {"n": n, "accuracy": share("right"), "with_step": share("has_step"),
                    "with_answer_line": share("has_marker"),
                    "no_integer": (sum(1 for r in rows if r["parsed"] is None) / n) if n else None,
                    "mean_chars": (sum(r["chars"] for r in rows) / n) if n else None,
                    "steps_written": written,
                    "steps_right": (sum(r["steps_right"] for r in rows) / written) if written else None}
        out[mode] = {"scores": s, "items": items}
    return out


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


def num(x, fmt: str = "{:.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def cell(text: str, width: int = 48) -> str:
    return " ".join(text.split())[:width].replace("|", "\\|")


def write_outputs(args, test: list[dict], rows: dict, runs: dict, meta: dict) -> None:
    res = Path(args.results)
    (res / "results.json").write_text(json.dumps({"date": str(date.today()), **meta, "arms": rows, "runs": runs},
                                                 indent=1, ensure_ascii=False), encoding="utf-8")
    steps = {a: r["summary"].get("steps") for a, r in runs.items()}
    lines = [f"{meta['n_train']} training and {len(test)} test problems ({meta['test_split']}), model "
             f"{args.model}, LoRA" + (f", {', '.join(f'{a} {s} steps' for a, s in steps.items())}, batch "
                                      f"{args.batch_size}" if runs else "")
             + f"; greedy answers of at most {args.max_new_tokens} tokens, each problem asked plain and with "
             "\"請一步一步思考。\" / \"Let's think step by step.\" appended. Right = the first integer after the last "
             "答案/Answer, else the last integer, equals the answer.", "",
             "| model | accuracy, plain | accuracy, step by step | writes a step (=), plain / step by step | "
             "answer line, plain / sbs | mean length (characters), plain / sbs | steps arithmetically right |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for arm, r in rows.items():
        p, c = r["plain"]["scores"]["all"], r["cot"]["scores"]["all"]
        name = arm + (" (untuned, reference)" if arm == "base" else "")
        lines.append(f"| {name} | **{pct(p['accuracy'])}** | **{pct(c['accuracy'])}** | {pct(p['with_step'])} / "
                     f"{pct(c['with_step'])} | {pct(p['with_answer_line'])} / {pct(c['with_answer_line'])} | "
                     f"{num(p['mean_chars'])} / {num(c['mean_chars'])} | {pct(p['steps_right'])} / "
                     f"{pct(c['steps_right'])} |")
    groups = [*LANGS, "seen templates", "held-out templates"]
    lines += ["", "Accuracy by group, plain / step by step (n per group in the header):", "",
              "| model | " + " | ".join(f"{g} (n={rows[next(iter(rows))]['plain']['scores'][g]['n']})"
                                       for g in groups) + " |",
              "| --- | " + " | ".join("---" for _ in groups) + " |"]
    for arm, r in rows.items():
        lines.append(f"| {arm} | " + " | ".join(f"{pct(r['plain']['scores'][g]['accuracy'])} / "
                                                f"{pct(r['cot']['scores'][g]['accuracy'])}" for g in groups) + " |")
    if len(set(steps.values())) > 1:
        lines += ["", f"**Warning:** the trained arms ran different numbers of steps ({steps}): the comparison "
                      "is not at the same budget."]
    weak = [a for a in runs if a in rows and a in ("rationale", "mixed") and
            (rows[a]["cot" if a == "mixed" else "plain"]["scores"]["all"]["with_step"] or 0) < 0.5]
    if weak:
        lines += ["", f"**Warning:** {', '.join(weak)} wrote a step in under half of its answers where it was "
                      "trained to: it did not learn the rationale format, so its rows say little about rationales "
                      "(train longer: --epochs)."]
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
        lines += ["", "Training loss (mean of the first and last few logged steps): " + ", ".join(
            f"{a} {r['loss_first']:.3f} → {r['loss_last']:.3f}" for a, r in runs.items()
            if r["loss_first"] is not None) + "."]
    lines += ["", f"Wall time of the whole script: {meta['total_s']:.0f} s ("
              + ", ".join(f"{k} {v:.0f} s" for k, v in meta["timings"].items()) + ")."]
    show = test[: args.examples]
    if show:
        lines += ["", "First test problems, answers (✓ right, ✗ wrong; plain, then step by step):", "",
                  "| problem | answer | " + " | ".join(rows) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in rows) + " |"]
        for k, p in enumerate(show):
            cells = []
            for r in rows.values():
                cells.append("<br>".join(f"{'✓' if it['right'] else '✗'} {cell(it['answer'])}"
                                         for it in (r[m]["items"][k] for m in MODES)))
            lines.append(f"| {p['id']}: {cell(p['question'], 200)} | {p['answer']} | " + " | ".join(cells) + " |")
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
    panels = [("all", "all test problems"), ("held-out templates", "held-out templates")]
    colors = {"plain": "#6baed6", "cot": "#08519c"}
    labels = {"plain": "plain prompt", "cot": "+ think step by step"}
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 4), sharey=True)
    arms = list(rows)
    width = 0.38
    for ax, (group, title) in zip(axes, panels):
        for j, mode in enumerate(MODES):
            xs = [i + (j - 0.5) * width for i in range(len(arms))]
            ys = [rows[a][mode]["scores"][group]["accuracy"] or 0.0 for a in arms]
            ax.bar(xs, ys, width, color=colors[mode], label=labels[mode])
            for x, y in zip(xs, ys):
                ax.text(x, y + 0.01, f"{100 * y:.0f}", ha="center", va="bottom", fontsize=7)
        n = rows[arms[0]]["plain"]["scores"][group]["n"]
        ax.set_xticks(range(len(arms)), [a + ("\n(untuned)" if a == "base" else "") for a in arms])
        ax.set_title(f"{title} (n={n})", fontsize=10)
        ax.set_ylim(0, 1.08)
    axes[0].set_ylabel("answer accuracy")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Training with and without rationales ({Path(args.model).name})", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    log(f"plot: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m", help="base model of every arm (default gemma-3-270m)")
    ap.add_argument("--only", default=",".join(DEFAULT_ARMS),
                    help=f"arms to run, of {', '.join(ARMS)} (default {','.join(DEFAULT_ARMS)})")
    ap.add_argument("--n-train", type=int, default=300, help="training problems, the same for every arm (300)")
    ap.add_argument("--n-test", type=int, default=100, help="held-out test problems (100; a multiple of 4 "
                                                            "balances languages and template groups)")
    ap.add_argument("--seed", type=int, default=0, help="the generator's seed; train.seed is --train-seed")
    ap.add_argument("--train-seed", type=int, default=42, help="data order and adapter init (train.seed, 42)")
    ap.add_argument("--epochs", type=float, default=5, help="passes over the training problems, every arm (5)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps, every arm (overrides --epochs)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: dianjing's, 2e-4)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more config for every training arm, e.g. --set train.threads=2 (repeatable)")
    ap.add_argument("--max-new-tokens", type=int, default=64,
                    help="answer budget (64: the longest rationale with its answer line is about 40 tokens)")
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--examples", type=int, default=8, help="test answers shown in results.md")
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
    if args.n_train < 1 or args.n_test < 2:
        sys.exit("--n-train must be at least 1 and --n-test at least 2 (one problem per language)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    Path(args.results).mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    train, test = generate_sets(args.n_train, args.n_test, args.seed)
    files = write_files(train, test, work)
    split = ", ".join(f"{sum(1 for p in test if p['lang'] == l)} {l}" for l in LANGS) + "; " + \
        f"{sum(p['seen'] for p in test)} of training templates, {sum(not p['seen'] for p in test)} of held-out ones"
    log(f"{len(train)} training problems ({', '.join(SEEN)}), {len(test)} test problems ({split}); in {work / 'data'}")
    runs, rows, timings = {}, {}, {}
    for arm in ARMS:
        if arm not in only:
            continue
        if arm != "base":
            runs[arm] = train_arm(args, arm, files[arm])
            timings[f"train {arm}"] = runs[arm]["command_s"]
        target = args.model if arm == "base" else runs[arm]["run"]
        log(f"== {arm}: answering {len(test)} problems × {len(MODES)} prompts")
        gens, seconds = answer(args, arm, target, files)
        timings[f"answer {arm}"] = seconds
        rows[arm] = score(test, gens)
        p, c = (rows[arm][m]["scores"]["all"] for m in MODES)
        log(f"{arm}: accuracy plain {pct(p['accuracy'])}, step by step {pct(c['accuracy'])}; writes a step "
            f"{pct(p['with_step'])} / {pct(c['with_step'])}")
    meta = {"model": args.model, "n_train": len(train), "test_split": split, "settings": vars(args),
            "templates": {"seen": SEEN, "held_out": HELD_OUT}, "triggers": TRIGGER, "timings": timings,
            "cost": {a: cost(info) for a, info in runs.items()}, "total_s": round(time.time() - t_all, 1),
            "rule": "right = the first integer after the last 答案/Answer (else the last integer) equals the answer; "
                    "writes a step = the answer contains '='"}
    write_outputs(args, test, rows, runs, meta)
    log(f"total {time.time() - t_all:.0f}s; results in {args.results}")


if __name__ == "__main__":
    main()
