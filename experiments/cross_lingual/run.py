"""Cross-lingual transfer: does extractive QA learned from English questions answer Chinese ones?

The lecture's table (Hsu, Liu and Lee 2019, arXiv 1909.09587): multilingual BERT fine-tuned on English
SQuAD only scores 63.3 EM / 78.8 F1 on Chinese DRCD, close to QANet trained on Chinese with no
pre-training (66.1 / 78.1); fine-tuned on Chinese it scores 81.2 / 88.7, on both 82.6 / 90.1. This is the
shape of that table with dianjing's extract-qa head on a multilingual decoder (Gemma 3 270M base, LoRA), four
arms with the same number of training questions N and one test set:

  en       N English questions (recovered from the T0 renderings of adversarial_qa, quoref and ropes)
  zh       N DRCD questions
  both     N//2 English + N - N//2 DRCD questions (the same total, not N + N)
  scratch  N DRCD questions, the same architecture from random weights (`model.random_init=true`); it keeps
           LoRA, as experiments/specialists/run.py's DRCD baseline does: random frozen weights + LoRA + head

Test: the same N_TEST DRCD questions for every arm, from articles no training question comes from (DRCD dev
split by article with experiments/specialists/run.py's prep_drcd: seed 0, 80/20 of the articles).

English records. Every T0 file is {prompt, completion}: the prompt rendered from a promptsource template
with the context and the question, the completion the answer + "<|endoftext|>". For each template that
holds both (TEMPLATES below) a pattern with the template's fixed text recovers the context and the question;
the pattern is matched twice, with its fields shortest and longest, and a prompt where the two disagree (the
template's fixed text also occurs inside a field) is dropped, as is one the pattern does not match. The
parsed prompts are then grouped by context + question (the same question from other templates: duplicates),
and each question is kept once if its renderings agree on the answer and the answer occurs exactly once in the
context (no occurrence, or several, and the question is dropped: the span would be a guess). Every drop is
counted by reason (prompts before grouping, questions after), printed, and written to results.json.

    python experiments/cross_lingual/run.py                       # the experiment (not yet run; see README)
    python experiments/cross_lingual/run.py --only zh,scratch     # some arms (the others' rows are kept)
    python experiments/cross_lingual/run.py --recover-only        # the English recovery counts, no training
    python -c "from pathlib import Path; from tests.tiny import build_model; build_model(Path('/tmp/xl-smoke/tiny'))"
    python experiments/cross_lingual/run.py --model /tmp/xl-smoke/tiny --steps 2 --n-train 8 --n-test 4 \\
        --work /tmp/xl-smoke/w                                    # smoke test

Writes results.json, results.md and results.png into this folder (with --work: into --work, so that a smoke
test never overwrites them); the training files, run folders and logs go to --work (default
experiments/cross_lingual/work/, not committed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # experiments/common.py
from common import cli, fresh, log  # noqa: E402
T0 = ROOT.parent / "shared" / "data" / "multitask" / "t0"
ARMS = ("en", "zh", "both", "scratch")
TRAIN_DATA = {"en": "English (T0 adversarial_qa, quoref, ropes)", "zh": "DRCD", "both": "English + DRCD, half each",
              "scratch": "DRCD, random init"}

# every arm: dianjing's extract-qa defaults, which measured best on 200 DRCD questions here (experiments/defaults:
# EM 7.5 / F1 18.2, against 3.0 / 14.3 for the specialists experiment's max_length 256, stride 64, lr 3e-4,
# one epoch), plus data.eval_fraction=0 so that an arm trains on all N questions; --set adds to them (a later
# value wins)
SETTINGS = ["data.eval_fraction=0", "train.save_every=1000000"]

# the lecture's table: DRCD dev, EM / F1 (arXiv 1909.09587)
LECTURE = [("QANet, no pre-training", "Chinese", 66.1, 78.1),
           ("multilingual BERT", "English (SQuAD)", 63.3, 78.8),
           ("multilingual BERT", "Chinese (DRCD)", 81.2, 88.7),
           ("multilingual BERT", "English + Chinese", 82.6, 90.1)]
LECTURE_ARM = {"en": 1, "zh": 2, "both": 3, "scratch": 0}  # the row of LECTURE an arm corresponds to


# -- English: extractive QA records recovered from the T0 renderings --------------------------------
# {Q}: the question (one line); {C}: the context; {B}/{S}: ropes' background and situation, joined into the
# context as B + "\n\n" + S. A template that is None is not used; its reason is counted.
TEMPLATES: dict[str, dict[str, str | None]] = {
    "adversarial_qa": {
        "answer_the_following_q": 'Given the following passage\n\n"{C}",\n\nanswer the following question. '
                                  'Note that the answer is present within the text.\n\nQuestion: {Q}\n',
        "based_on": "Extract the answer to the question from the following context.\nQuestion: {Q}\nContext: {C}\n",
        "question_context_answer": 'Question: "{Q}"\n\nContext: "{C}"\n\nAnswer:\n',
        "tell_what_it_is": 'I know that the answer to the question "{Q}" is in "{C}". Can you tell me what it is?\n',
        "generate_question": None,
    },
    "quoref": {
        "Answer_Friend_Question": "A friend asked me to answer this question: {Q}, using the article: {C}, "
                                  "what would be the answer ?\n",
        "Answer_Question_Given_Context": "Given the following context:\n\n{C}\n\nanswer the following question:"
                                         "\n\n{Q}\n",
        "Answer_Test": "I have a test where I am given the following article, what is an answer for the "
                       "question: {Q} ?\n\n{C}\n",
        "Context_Contains_Answer": "This article: {C} contains an answer for the question: {Q}, what is it ?\n",
        "Find_Answer": "The following article contains an answer for the question: {Q} , can you please find "
                       "it? \n\n{C}\n",
        "Found_Context_Online": "Found the following article online, use it to answer the question: {Q}\n\n{C}\n",
        "Given_Context_Answer_Question": "{Q}\n\nAnswer the above question based on the context below:\n\n{C}\n",
        "Guess_Answer": "The answer to the question: {Q} is inside the article: {C}, can you guess it ?\n",
        "Read_And_Extract_": "Read the following paragraph and extract the answer for the question: {Q}\n\n{C}\n",
        "What_Is_The_Answer": "What is the answer for the question: {Q} from the following article ?\n\n{C}\n",
        "Guess_Title_For_Context": None,
    },
    "ropes": {
        "background_new_situation_answer": "I can use this background: {B}\n\nNow, I have a new situation: {S}"
                                           "\n\nAnswer this question please: {Q}\n",
        "background_situation_middle": "You are given a new situation: {S}\n\nand a hint : {B}\n\nPlease answer "
                                       "this question : {Q}\n",
        "given_background_situation": "Given the background: {B}\n\nand the situation: {S}\n\nAnswer the "
                                      "following question: {Q}\n",
        "new_situation_background_answer": "I have a new situation: {S}\n\nBut I can use this background: {B}"
                                           "\n\nWhat is an answer for this question: {Q}\n",
        "plain_bottom_hint": "{S}\n\n{Q}\n\nHint: {B}\n",
        "prompt_beginning": "Please answer correctly the following question related to the paragraph below. "
                            "\n\n{Q}\n\n{S}\n\nHint: {B}\n",
        "prompt_bottom_hint_beginning": "Background: {B}\n\nParagraph: {S}\n\nGiven the paragraph above, please "
                                        "answer correctly the following question: {Q}\n",
        "prompt_mix": "{S}\n\nGiven the paragraph above, please answer correctly the following question: \n\n{Q}"
                      "\n\nHint: {B}\n",
        "read_background_situation": "I read this background article the other day: {B}\n\nI am facing a new "
                                     "situation today: {S}\n\nUsing the knowledge I acquired from the background "
                                     "article, how should I answer correctly the following question regarding my "
                                     "new situation: {Q}\n",
        "plain_background_situation": None,
        "plain_no_background": None,
        "prompt_bottom_no_hint": None,
    },
}
UNUSED = {  # why a template that is None above is not used
    "generate_question": "not used: the completion is a question, not an answer",
    "Guess_Title_For_Context": "not used: the completion is a title, not an answer",
    "plain_background_situation": "not used: nothing marks where the background ends and the situation begins",
    "plain_no_background": "not used: no background (the same question over a shorter context; the templates "
                           "with both give it)",
    "prompt_bottom_no_hint": "not used: no background (the same question over a shorter context; the templates "
                             "with both give it)",
}
EOT = "<|endoftext|>"
# drop reasons, in the order they are checked
R_UNKNOWN = "template not known to this script"
R_NO_EOT = f"completion does not end with {EOT}"
R_NO_MATCH = "prompt does not match its template"
R_AMBIGUOUS_PARSE = "ambiguous parse: the template's fixed text also occurs inside a field"
R_EMPTY = "empty question, context or answer"
R_CONFLICT = "templates disagree on the answer (a quoref question with several answers): dropped"
R_NOT_FOUND = "answer not in the context"
R_MANY = "answer occurs more than once in the context"


def _pattern(template: str, greedy: bool) -> re.Pattern:
    """The template as a regular expression: its fixed text literal, each field a named group."""
    parts = re.split(r"(\{[QCBS]\})", template)
    out = []
    for p in parts:
        if p in ("{Q}", "{C}", "{B}", "{S}"):
            body = "[^\n]+" if p == "{Q}" else ".+"
            out.append(f"(?P<{p[1].lower()}>{body}{'' if greedy else '?'})")
        else:
            out.append(re.escape(p))
    return re.compile("".join(out), re.DOTALL)


def _fields(m: re.Match) -> tuple[str, str]:
    g = m.groupdict()
    context = g["c"] if "c" in g else g["b"].strip() + "\n\n" + g["s"].strip()
    return context.strip(), g["q"].strip()


def _split_name(stem: str) -> tuple[str, str, str] | None:
    """(family, dataset, template) of a T0 file stem, e.g. adversarial_qa_dbert_based_on →
    (adversarial_qa, adversarial_qa_dbert, based_on); None when it is none of ours."""
    for family, templates in TEMPLATES.items():
        if not stem.startswith(family + "_"):
            continue
        rest = stem[len(family) + 1:]
        for t in sorted(templates, key=len, reverse=True):
            if rest == t:
                return family, family, t
            if rest.endswith("_" + t):
                return family, f"{family}_{rest[: -len(t) - 1]}", t
        return family, family, rest  # a template this script does not know
    return None


def recover_english(t0: Path) -> tuple[list[dict], dict]:
    """SQuAD-style records {id, dataset, question, context, answers} from the T0 files of TEMPLATES' datasets,
    and the counts: per dataset, prompts read, kept and dropped by reason (also per template)."""
    files = sorted(p for p in t0.glob("*.jsonl") if _split_name(p.stem))
    if not files:
        sys.exit(f"{t0}: no T0 file of {', '.join(TEMPLATES)} (*.jsonl): is ../shared/data/multitask/t0 there? "
                 "Pass another folder with --t0")
    counts: dict[str, dict] = {}
    parsed: list[tuple[str, str, str, str, str]] = []  # dataset, template, context, question, answer
    compiled = {(f, t): (_pattern(s, False), _pattern(s, True))
                for f, ts in TEMPLATES.items() for t, s in ts.items() if s}
    for path in files:
        family, dataset, template = _split_name(path.stem)
        c = counts.setdefault(dataset, {"prompts": 0, "prompt_drops": Counter(), "duplicates": 0, "questions": 0,
                                        "question_drops": Counter(), "kept": 0, "by_template": {}})
        tc = c["by_template"].setdefault(template, Counter())
        lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
        c["prompts"] += len(lines)
        tc["prompts"] += len(lines)
        spec = TEMPLATES[family].get(template, "unknown")
        if spec is None or spec == "unknown":
            reason = R_UNKNOWN if spec == "unknown" else UNUSED[template]
            if spec == "unknown":
                log(f"warning: {path.name}: template {template!r} is not in TEMPLATES; its {len(lines)} prompts "
                    "are not used (add its pattern to use them)")
            c["prompt_drops"][reason] += len(lines)
            tc[reason] += len(lines)
            continue
        lazy, greedy = compiled[(family, template)]
        for n, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                prompt, completion = rec["prompt"], rec["completion"]
            except (ValueError, KeyError, TypeError) as e:
                sys.exit(f"{path}:{n}: not a {{prompt, completion}} JSON record ({e}): is this a T0 file?")
            reason = None
            if not completion.endswith(EOT):
                reason = R_NO_EOT
            else:
                m1, m2 = lazy.fullmatch(prompt), greedy.fullmatch(prompt)
                if not m1 or not m2:
                    reason = R_NO_MATCH
                elif _fields(m1) != _fields(m2):
                    reason = R_AMBIGUOUS_PARSE
                else:
                    context, question = _fields(m1)
                    answer = completion[: -len(EOT)].strip()
                    if not (context and question and answer):
                        reason = R_EMPTY
            if reason:
                c["prompt_drops"][reason] += 1
                tc[reason] += 1
                continue
            tc["parsed"] += 1
            parsed.append((dataset, template, context, question, answer))
    # de-duplicate: one question per context + question, its first rendering (file order); a question whose
    # renderings disagree on the answer is dropped (several answers, or several spans of one)
    groups: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for dataset, template, context, question, answer in parsed:
        groups.setdefault((context, question), []).append((dataset, template, answer))
    records = []
    for (context, question), renderings in groups.items():
        dataset, template, answer = renderings[0]
        c = counts[dataset]
        c["questions"] += 1
        for other, _, _ in renderings[1:]:  # counted where the duplicate rendering comes from
            counts[other]["duplicates"] += 1
        at = [m.start() for m in re.finditer(re.escape(answer), context)]
        reason = (R_CONFLICT if len({a for _, _, a in renderings}) > 1 else R_NOT_FOUND if not at
                  else R_MANY if len(at) > 1 else None)
        if reason:
            c["question_drops"][reason] += 1
            continue
        c["kept"] += 1
        records.append({"id": f"{dataset}-{len(records)}", "dataset": dataset, "template": template,
                        "question": question, "context": context,
                        "answers": {"text": [answer], "answer_start": [at[0]]}})
    out = {}
    for dataset, c in sorted(counts.items()):
        parsed_n = sum(t["parsed"] for t in c["by_template"].values())
        # every prompt is parsed or dropped for one counted reason, every parsed one a question or a duplicate,
        # every question kept or dropped for one counted reason
        if (sum(c["prompt_drops"].values()) + parsed_n != c["prompts"] or c["questions"] + c["duplicates"] != parsed_n
                or c["kept"] + sum(c["question_drops"].values()) != c["questions"]):
            sys.exit(f"internal error: {dataset}: the counts do not add up: {c}")
        out[dataset] = {"prompts": c["prompts"], "prompt_drops": dict(c["prompt_drops"].most_common()),
                        "parsed": parsed_n, "duplicates": c["duplicates"], "questions": c["questions"],
                        "question_drops": dict(c["question_drops"].most_common()), "kept": c["kept"],
                        "by_template": {t: dict(v) for t, v in sorted(c["by_template"].items())}}
    return records, out


def show_recovery(counts: dict) -> str:
    lines = ["English records recovered from T0: prompts read → parsed → distinct questions (context + question) "
             "→ kept; every drop by reason:"]
    total, drops = Counter(), Counter()
    for dataset, c in counts.items():
        lines.append(f"  {dataset}: {c['prompts']} prompts → {c['parsed']} parsed → {c['questions']} questions "
                     f"({c['duplicates']} duplicate renderings) → {c['kept']} kept")
        for reason, n in [*c["prompt_drops"].items(), *c["question_drops"].items()]:
            unit = "prompts" if reason in c["prompt_drops"] else "questions"
            lines.append(f"      {n:5d} {unit:9s} {reason}")
            drops[f"{reason} ({unit})"] += n
        for k in ("prompts", "parsed", "questions", "duplicates", "kept"):
            total[k] += c[k]
    lines.append(f"  all: {total['prompts']} prompts → {total['parsed']} parsed → {total['questions']} questions → "
                 f"{total['kept']} kept; dropped: " + "; ".join(f"{n} {r}" for r, n in drops.most_common()))
    return "\n".join(lines)


# -- Chinese: DRCD split by article (experiments/specialists/run.py's prep_drcd) ---------------------
def prep_drcd(data_dir: Path, n_train: int, n_test: int) -> tuple[Path, Path]:
    spec = importlib.util.spec_from_file_location("specialists_run", HERE.parent / "specialists" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.WORK = data_dir  # its splits go here, not into the specialists' work folder
    return mod.prep_drcd(n_train, n_test)


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(l) for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]


def write_jsonl(p: Path, rows: list[dict]) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p


def arm_files(args, english: list[dict], data_dir: Path) -> tuple[dict[str, Path], Path, dict]:
    """Each arm's training file and the one test file; what each training file holds."""
    n = args.n_train
    zh_train, test = prep_drcd(data_dir, n, args.n_test)
    zh = read_jsonl(zh_train)
    tests = read_jsonl(test)
    if len(zh) < n:
        sys.exit(f"--n-train {n}: the training articles of DRCD hold only {len(zh)} questions; use a smaller "
                 "--n-train")
    if len(tests) < args.n_test:
        sys.exit(f"--n-test {args.n_test}: the test articles of DRCD hold only {len(tests)} questions; use a "
                 "smaller --n-test")
    pool = list(english)
    random.Random(0).shuffle(pool)
    if len(pool) < n:
        sys.exit(f"--n-train {n}: only {len(pool)} English questions were recovered (counts above); use "
                 f"--n-train {len(pool)} or less")
    strip = lambda r: {k: r[k] for k in ("id", "question", "context", "answers")}  # noqa: E731
    n_en = n // 2
    both = [strip(r) for r in pool[:n_en]] + zh[: n - n_en]
    random.Random(0).shuffle(both)
    files = {"en": write_jsonl(data_dir / "train_en.jsonl", [strip(r) for r in pool[:n]]),
             "zh": zh_train, "both": write_jsonl(data_dir / "train_both.jsonl", both), "scratch": zh_train}
    holds = {"en": {"english": n, "drcd": 0, "english_by_dataset": dict(Counter(r["dataset"] for r in pool[:n]))},
             "zh": {"english": 0, "drcd": n},
             "both": {"english": n_en, "drcd": n - n_en,
                      "english_by_dataset": dict(Counter(r["dataset"] for r in pool[:n_en]))},
             "scratch": {"english": 0, "drcd": n}}
    return files, test, holds


# -- training and scoring, through the CLI ------------------------------------------------------------


def settings(args, arm: str) -> list[str]:
    return [*SETTINGS, *(["model.random_init=true"] if arm == "scratch" else []),
            *([f"train.max_steps={args.steps}"] if args.steps else []), *args.set]


def run_arm(args, arm: str, train_f: Path, test_f: Path) -> dict:
    work = Path(args.work)
    out = work / "runs" / arm
    fresh(out)
    sets = settings(args, arm)
    cmd = ["train", "--task", "extract-qa", "--model", args.model, "--data", str(train_f), "-o", str(out)]
    for s in sets:
        cmd += ["--set", s]
    log(f"== {arm}: {TRAIN_DATA[arm]}, {args.n_train} questions")
    train_s = cli(cmd, work / f"train-{arm}.log")
    eval_s = cli(["eval", str(out), "--data", str(test_f)], work / f"eval-{arm}.log")
    found = [p for p in (out / "eval" / f"{test_f.stem}.json", out / "eval" / f"{test_f.name}.json") if p.is_file()]
    if not found:
        sys.exit(f"{out / 'eval'}: no {test_f.stem}.json after `dianjing eval` (files there: "
                 f"{', '.join(p.name for p in (out / 'eval').glob('*')) or 'none'}); see {work / f'eval-{arm}.log'}")
    ev = json.loads(found[0].read_text(encoding="utf-8"))
    scores = dict(ev["scores"])
    scores.pop("per_type", None)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {"arm": arm, "train_data": TRAIN_DATA[arm], "run": str(out), "settings": sets, "scores": scores,
            "command_train_s": round(train_s, 1), "command_eval_s": round(eval_s, 1), "summary": summary,
            "cost": cost(summary)}


def cost(s: dict) -> dict:
    """An arm's cost from its summary.json, and the same FLOPs on one H100 (dianjing.eval.cost)."""
    from dianjing.eval.cost import DEFAULT_MFU, projections

    h100 = next(p for p in projections(s.get("estimated_flops")) if p["accelerator"] == "H100-SXM")
    return {"steps": s.get("steps"), "examples": s.get("examples"), "tokens": s.get("tokens"),
            "supervised_tokens": s.get("supervised_tokens"), "estimated_flops": s.get("estimated_flops"),
            "train_wall_s": s.get("wall_time_s"), "tokens_per_s": s.get("tokens_per_s"), "device": s.get("device"),
            "h100_sxm_s": h100["seconds"], "h100_mfu": DEFAULT_MFU}


# -- outputs ----------------------------------------------------------------------------------------------
def _num(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def write_outputs(args, rows: dict, meta: dict) -> None:
    res = Path(args.results)
    (res / "results.json").write_text(json.dumps({"date": str(date.today()), **meta, "arms": rows}, indent=1,
                                                 ensure_ascii=False), encoding="utf-8")
    lines = [f"Model {meta['model']} (LoRA, extract-qa head); every arm {meta['n_train']} training questions, "
             f"all tested on the same {meta['n_test']} DRCD questions from held-out articles. Settings: "
             f"{' '.join(meta['settings'])}.", "",
             "| arm | train data | N (English + DRCD) | EM | F1 | train time | tokens | est. FLOPs | one H100-SXM at "
             f"{int(100 * meta['h100_mfu'])}% MFU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for arm in ARMS:
        r = rows.get(arm)
        if r is None:
            continue
        c, h, s = r["cost"], r["holds"], r["scores"]
        lines.append(f"| {arm} | {r['train_data']} | {h['english'] + h['drcd']} ({h['english']} + {h['drcd']}) | "
                     f"**{_num(s.get('exact_match'), '.1f')}** | **{_num(s.get('f1'), '.1f')}** | "
                     f"{_num(c['train_wall_s'], '.0f')} s | {_num(c['tokens'], ',')} | "
                     f"{_num(c['estimated_flops'], '.3g')} | {_num(c['h100_sxm_s'], '.3g')} s |")
    lines += ["", "The lecture's table (arXiv 1909.09587; DRCD dev, 110M multilingual BERT fully fine-tuned on "
                  "tens of thousands of questions), for reference:", "",
              "| model | fine-tuned on | EM | F1 | arm here |", "| --- | --- | --- | --- | --- |"]
    for i, (model, data, em, f1) in enumerate(LECTURE):
        arm = next(a for a, j in LECTURE_ARM.items() if j == i)
        lines.append(f"| {model} | {data} | {em} | {f1} | {arm} |")
    lines += ["", "English questions: " + ", ".join(f"{d} {c['kept']} of {c['prompts']} prompts"
                                                   for d, c in meta["english_recovery"].items())
              + " (drops by reason in results.json, `english_recovery`)."]
    for arm, r in rows.items():  # what dianjing's reader and scorer left out or repaired, said where it happened
        d, s = r["summary"].get("data") or {}, r["scores"]
        if d.get("rejected") or d.get("fixed"):
            lines += ["", f"{arm}: the training file's reader rejected {d.get('rejected') or 'nothing'}, repaired "
                          f"{d.get('fixed') or 'nothing'} (kept {d.get('kept')})."]
        if s.get("missing") or s.get("extra"):
            lines += ["", f"{arm}: {s.get('missing')} test questions without a prediction, {s.get('extra')} "
                          "predictions without a question."]
    kept = meta.get("kept_from_earlier") or []
    lines += ["", f"Wall time of this run of the script: {meta['total_s']:.0f} s"
              + (f" (arms {', '.join(kept)} kept from an earlier run with the same settings)." if kept else ".")]
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
    arms = [a for a in ARMS if a in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for j, (key, label, color) in enumerate((("exact_match", "EM", "#2171b5"), ("f1", "F1", "#6baed6"))):
        xs = [i + (j - 0.5) * width for i in range(len(arms))]
        ys = [rows[a]["scores"].get(key) or 0.0 for a in arms]
        ax.bar(xs, ys, width, label=label, color=color)
        for x, y in zip(xs, ys):
            ax.text(x, y + 0.8, f"{y:.1f}", ha="center", va="bottom", fontsize=8)
        ref = [LECTURE[LECTURE_ARM[a]][2 + j] for a in arms]  # the lecture's EM (j 0) or F1 (j 1)
        ax.scatter(xs, ref, marker="_", s=600, color="black", zorder=3,
                   label="the lecture's (mBERT; QANet for scratch)" if j == 0 else None)
    short = {"en": "English", "zh": "DRCD", "both": "English + DRCD", "scratch": "DRCD,\nrandom init"}
    ax.set_xticks(range(len(arms)), [f"{a}\n({short[a]})" for a in arms])
    ax.set_ylim(0, 100)
    n_test = rows[arms[0]]["n_test"]
    ax.set_ylabel(f"score on {n_test} held-out DRCD questions")
    ax.set_title(f"Cross-lingual extractive QA, {rows[arms[0]]['n_train']} training questions "
                 f"({Path(args.model).name})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    log(f"plot: {out}")


def earlier_rows(args, meta: dict, only: list[str]) -> dict:
    """The arms of an earlier results.json in the results folder that this run does not retrain, when they
    were run with the same model, data sizes and settings; the others are left out, and said."""
    p = Path(args.results) / "results.json"
    if not p.is_file() or set(only) == set(ARMS):
        return {}
    old = json.loads(p.read_text(encoding="utf-8"))
    keep, same = {}, all(old.get(k) == meta[k] for k in ("model", "n_train", "n_test", "settings", "steps", "set"))
    for arm, r in old.get("arms", {}).items():
        if arm in only:
            continue
        if same:
            keep[arm] = r
        else:
            log(f"{p}: arm {arm} of {old.get('date')} left out: it ran with another model, data size or settings")
    if keep:
        log(f"kept from {p} ({old.get('date')}): {', '.join(keep)}")
    return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m", help="the architecture and pre-trained weights (default "
                                                            "gemma-3-270m); the scratch arm uses only its config")
    ap.add_argument("--n-train", type=int, default=300, help="training questions per arm (default 300)")
    ap.add_argument("--n-test", type=int, default=200, help="held-out DRCD questions, the same for every arm")
    ap.add_argument("--steps", type=int, default=None, help="train.max_steps for every arm (a smoke test)")
    ap.add_argument("--only", default=",".join(ARMS), help=f"arms to run, comma-separated: {', '.join(ARMS)}")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more config for every arm, after the defaults " + " ".join(SETTINGS) + " (repeatable)")
    ap.add_argument("--t0", default=str(T0), help="folder of the T0 files (default ../shared/data/multitask/t0)")
    ap.add_argument("--recover-only", action="store_true",
                    help="recover the English records, print the counts and exit (no training)")
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
    if args.n_train < 2 or args.n_test < 1:
        sys.exit("--n-train must be at least 2 (the both arm takes half from each language) and --n-test at least 1")
    t_all = time.time()
    english, recovery = recover_english(Path(args.t0))
    log(show_recovery(recovery))
    if args.recover_only:
        return
    work = Path(args.work)
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    Path(args.results).mkdir(parents=True, exist_ok=True)
    write_jsonl(data_dir / "english_all.jsonl", english)
    files, test_f, holds = arm_files(args, english, data_dir)
    meta = {"model": args.model, "n_train": args.n_train, "n_test": args.n_test, "settings": SETTINGS,
            "steps": args.steps, "set": args.set, "test_file": str(test_f), "english_recovery": recovery,
            "english_recovered": len(english), "h100_mfu": None,
            "split": "DRCD dev by article (experiments/specialists/run.py prep_drcd: seed 0, 80/20 of the "
                     "articles; questions sampled with seed 1); English pool shuffled with seed 0",
            "scratch": "model.random_init=true with LoRA: random frozen weights + LoRA + head (as "
                       "experiments/specialists/run.py's DRCD baseline)"}
    rows = earlier_rows(args, meta, only)
    meta["kept_from_earlier"] = sorted(rows)
    for arm in ARMS:
        if arm not in only:
            continue
        r = run_arm(args, arm, files[arm], test_f)
        r.update({"holds": holds[arm], "train_file": str(files[arm]), "n_train": args.n_train,
                  "n_test": args.n_test})
        rows[arm] = r
        s = r["scores"]
        log(f"{arm}: EM {_num(s.get('exact_match'), '.1f')}, F1 {_num(s.get('f1'), '.1f')} on {s.get('count')} "
            f"questions; trained in {r['cost']['train_wall_s']} s")
    from dianjing.eval.cost import DEFAULT_MFU

    meta["h100_mfu"] = DEFAULT_MFU
    meta["total_s"] = round(time.time() - t_all, 1)
    write_outputs(args, rows, meta)
    log(f"total {time.time() - t_all:.0f}s; results in {args.results}")


if __name__ == "__main__":
    main()
