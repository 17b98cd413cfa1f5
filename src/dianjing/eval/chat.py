"""`dianjing eval RUN --data FILE` on a chat run or a bare model: answers generated with the run's own
template, scored against the file's reference answers.

Per file, one headline metric, chosen with --metric or detected and said (`choose_metric`):

* records with options → **accuracy** by option log-likelihood (the option whose tokens the model
  finds likeliest after the prompt; also per token, `accuracy_norm`);
* items with a short answer (a question set's `short_answer`: "玉山") → **contains** it;
* short references (median ≤ SHORT_ANSWER answer tokens) → **f1** (with exact_match, contains);
* longer ones → **rouge_l**.

Every generated answer is also given exact match, F1 (both Chinese-aware, SQuAD/DRCD rules) and
contains-the-answer against the short answer where there is one (else the reference), ROUGE-L against
the reference, and every reference its perplexity under the template (the model's
mean negative log-likelihood over the reference and its end-of-turn tokens). Scores are percentages.
Written to RUN/eval/<file stem>.json, every generation to the .jsonl beside it.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path

from dianjing.errors import ConfigError
from dianjing.eval.items import EvalFile, EvalItem
from dianjing.eval.metrics import answer_tokens, contains_answer, perplexity, qa_exact, qa_f1, rouge_l
from dianjing.eval.runner import Job, Result, Settings, run_jobs

METRICS = ("auto", "accuracy", "exact_match", "f1", "contains", "rouge_l", "perplexity")
SHORT_ANSWER = 10  # answer tokens (words, or characters for Chinese): at most this → EM/F1, else ROUGE-L
ANSWER_METRICS = ("exact_match", "f1", "contains", "rouge_l")


def choose_metric(ef: EvalFile, requested: str) -> tuple[str, str]:
    """The file's headline metric and why (what the log and the JSON say)."""
    with_options = sum(1 for it in ef.items if it.options)
    if requested != "auto":
        if requested == "accuracy" and not with_options:
            raise ConfigError(f"--metric accuracy: {ef.path} has no record with options (a list in 'options' "
                              "or 'choices', the reference among them)",
                              fix="add options to the records, or choose another --metric")
        return requested, "--metric"
    if with_options * 2 >= len(ef.items):
        return "accuracy", f"auto: {with_options} of {len(ef.items)} records have options → option log-likelihood"
    with_short = sum(1 for it in ef.items if it.short_answer)
    if with_short * 2 >= len(ef.items):
        return "contains", (f"auto: {with_short} of {len(ef.items)} items have a short answer → contains-the-answer "
                            "(EM and F1 against it too)")
    median = statistics.median(len(answer_tokens(it.reference)) for it in ef.items)
    if median <= SHORT_ANSWER:
        return "f1", f"auto: references are short (median {median:g} answer tokens ≤ {SHORT_ANSWER}) → EM/F1"
    return "rouge_l", f"auto: references are long (median {median:g} answer tokens > {SHORT_ANSWER}) → ROUGE-L"


def answer_budget(tokenizer, items: list[EvalItem], metric: str) -> int:
    """Tokens to generate when --max-new-tokens is not given: past the longest option, or twice the longest
    reference plus 16 (at most 512)."""
    enc = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    if metric == "accuracy" and all(it.options for it in items):
        return max(enc(o) for it in items for o in it.options) + 8
    return min(512, 2 * max(enc(it.reference) for it in items) + 16)


def item_scores(item: EvalItem, res: Result) -> dict:
    """One item's scores in [0, 1] (None where they do not apply)."""
    s: dict = {}
    if res.answer is not None:
        key = item.key  # the short answer where the item has one
        s.update(exact_match=qa_exact(res.answer, key), f1=qa_f1(res.answer, key),
                 contains=contains_answer(res.answer, key), rouge_l=rouge_l(res.answer, item.reference))
    if res.option_logprobs:
        sums = [sum(x) for x in res.option_logprobs]
        means = [sum(x) / len(x) for x in res.option_logprobs]
        ref = item.reference.strip()
        s["chosen"] = item.options[max(range(len(sums)), key=sums.__getitem__)]
        s["chosen_norm"] = item.options[max(range(len(means)), key=means.__getitem__)]
        s["accuracy"] = float(s["chosen"].strip() == ref)
        s["accuracy_norm"] = float(s["chosen_norm"].strip() == ref)
        s["option_logprobs"] = [round(x, 4) for x in sums]
    if res.reference_logprobs:
        s["nll"] = round(-sum(res.reference_logprobs) / len(res.reference_logprobs), 4)
        s["reference_tokens"] = len(res.reference_logprobs)
    return s


def aggregate(items: list[EvalItem], results: list[Result], scores: list[dict]) -> dict:
    """Percentages over the items that have each score; perplexity over every reference token."""
    out: dict = {"n": len(items)}
    for k in (*ANSWER_METRICS, "accuracy", "accuracy_norm"):
        vals = [s[k] for s in scores if k in s]
        if vals:
            out[k] = round(100.0 * sum(vals) / len(vals), 2)
    ppl = perplexity([r.reference_logprobs for r in results if r.reference_logprobs])
    if ppl["tokens"]:
        out.update(perplexity=round(ppl["perplexity"], 4), nll=round(ppl["nll"], 4), reference_tokens=ppl["tokens"])
    answers = [r.answer for r in results if r.answer is not None]
    if answers:
        out["answer_tokens_mean"] = round(sum(len(answer_tokens(a)) for a in answers) / len(answers), 1)
        out["empty_answers"] = sum(1 for a in answers if not a)
    return out


def by_category(items: list[EvalItem], results: list[Result], scores: list[dict]) -> dict:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        if it.category:
            groups[it.category].append(i)
    return {c: aggregate([items[i] for i in ix], [results[i] for i in ix], [scores[i] for i in ix])
            for c, ix in sorted(groups.items())}


def evaluate_file(model, tokenizer, chat, ef: EvalFile, *, metric: str = "auto", settings: Settings,
                  max_new_tokens: int | None = None, perplexity_: bool = True, log=print) -> tuple[dict, list[dict]]:
    """Score one file's items; returns the result (JSON) and one row per generation (JSONL)."""
    if not ef.items:
        raise ConfigError(f"{ef.path}: no item to score ({ef.skipped.summary()})",
                          fix="a chat eval needs records with a reference answer; see docs/evaluation.md")
    chosen, why = choose_metric(ef, metric)
    if not settings.generate and chosen in ANSWER_METRICS:
        if metric != "auto":
            raise ConfigError(f"--metric {metric} scores generated answers, and --no-generate generates none",
                              fix="drop --no-generate, or use --metric accuracy (options) or perplexity")
        chosen, why = "perplexity", why + "; --no-generate: the references' perplexity instead"
    if chosen == "perplexity" and not perplexity_:
        raise ConfigError("--metric perplexity and --no-perplexity contradict each other", fix="drop one of them")
    generate = chosen != "perplexity" and settings.generate
    budget = max_new_tokens or answer_budget(tokenizer, ef.items, chosen)
    run = Settings(**{**settings.__dict__, "max_new_tokens": budget, "generate": generate})
    left = "".join(f"; {n} × {why_}" for why_, n in [*ef.skipped.counts.items(), *ef.notes.items()])
    log(f"{ef.path}: {len(ef.items)} items from {ef.records} records{left}")
    log(f"{ef.path}: metric {chosen} ({why}); "
        + (f"generating up to {budget} tokens" + (" (auto)" if not max_new_tokens else "") if generate
           else "no generation"))
    t0 = time.monotonic()
    jobs = [Job(it.messages, it.reference if perplexity_ else None, it.options) for it in ef.items]
    results = run_jobs(model, tokenizer, chat, jobs, run, log=log)
    scores = [item_scores(it, r) for it, r in zip(ef.items, results)]
    result = {"data": ef.path, "format": ef.format, "metric": chosen, "metric_reason": why,
              "scores": aggregate(ef.items, results, scores), "by_category": by_category(ef.items, results, scores),
              "generation": {"generate": generate, "max_new_tokens": budget, "temperature": run.temperature,
                             "top_p": run.top_p, "seed": run.seed, "batch_size": run.batch_size,
                             "max_prompt_tokens": run.max_prompt_tokens},
              "prompts_cut": sum(r.cut for r in results),
              "references_outside_template": sum(1 for r in results if r.reference_logprobs and
                                                 not r.reference_in_template),
              "data_report": ef.report(), "elapsed_s": round(time.monotonic() - t0, 1)}
    rows = [{"id": it.id, "where": it.where, **({"category": it.category} if it.category else {}),
             "prompt": it.messages, "reference": it.reference,
             **({"short_answer": it.short_answer} if it.short_answer else {}),
             **({"options": it.options} if it.options else {}),
             "answer": r.answer, "prompt_tokens": r.prompt_tokens, "prompt_cut": r.cut, "scores": s}
            for it, r, s in zip(ef.items, results, scores)]
    return result, rows


def output_paths(run: str, data: str, out: str | None, several: bool, taken: set[str]) -> tuple[Path, Path]:
    """RUN/eval/<stem>.json (a bare model: ./eval/<stem>-<model>.json), or --out; the .jsonl beside it."""
    from dianjing.infer.load import is_run

    stem = Path(data.removeprefix("builtin:")).stem
    if out and not several:
        path = Path(out)
    else:
        if out:
            folder = Path(out)
        elif is_run(run):
            folder = Path(run) / "eval"
        else:  # a bare model: never write into a model folder
            folder = Path("eval")
            stem += "-" + re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(run)).name)
        path, k = folder / f"{stem}.json", 1
        while str(path) in taken:
            k += 1
            path = folder / f"{stem}-{k}.json"
    taken.add(str(path))
    return path, path.with_suffix(".jsonl")


def write(result: dict, rows: list[dict], path: Path, gens: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    gens.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result["generations"] = str(gens)
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")


COLUMNS = (("exact_match", "EM"), ("f1", "F1"), ("contains", "contains"), ("rouge_l", "ROUGE-L"),
           ("accuracy", "acc (LL)"), ("accuracy_norm", "acc (LL/tok)"), ("perplexity", "ppl"))


def print_results(results: list[dict], title: str) -> None:
    """One row per file (its headline metric marked with *), then per category where the items have one."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    rows = [(r["data"], r["metric"], r["scores"]) for r in results]
    rows += [(f"  {r['data']} · {c}", r["metric"], s) for r in results for c, s in r["by_category"].items()]
    used = [(k, h) for k, h in COLUMNS if any(k in s for _, _, s in rows)]
    t = Table(title=title)
    for name in ("data", "n", *(h for _, h in used)):
        t.add_column(name, justify="left" if name == "data" else "right")
    for name, metric, s in rows:
        cells = []
        for k, _ in used:
            v = s.get(k)
            cells.append("–" if v is None else (f"{v:.2f}" if k == "perplexity" else f"{v:.1f}")
                         + ("*" if k == metric else ""))
        t.add_row(name, str(s["n"]), *cells)
    console.print(t)
    console.print("* the file's headline metric; scores are percentages, ppl the references' perplexity")


def run_system_prompt(run: str) -> str | None:
    """The data.system_prompt a chat run trained with (added to prompts without a system message), or None."""
    import yaml

    from dianjing.infer.load import is_run

    if not is_run(run):
        return None
    cfg = yaml.safe_load((Path(run) / "config.yaml").read_text(encoding="utf-8")) or {}
    return (cfg.get("data") or {}).get("system_prompt")


def evaluate_chat(run: str, data: list[str], *, fmt: str = "auto", columns: dict | None = None, metric: str = "auto",
                  settings: Settings, max_new_tokens: int | None = None, perplexity_: bool = True,
                  on_error: str = "skip", out: str | None = None, precision: str = "auto", device: str = "auto",
                  log=print) -> list[tuple[dict, Path]]:
    """Score a chat run (or a bare model) on each data file; every result is written as it is done."""
    from dianjing.eval.items import read_eval_file
    from dianjing.infer.load import is_run, load_run

    if metric not in METRICS:
        raise ConfigError(f"--metric {metric!r}: not one of {', '.join(METRICS)}")
    system = run_system_prompt(run)
    files = [read_eval_file(p, fmt=fmt, columns=columns, on_error=on_error, system_prompt=system, log=log)
             for p in data]  # every file is read (and checked) before the model is loaded
    model, tok, chat = load_run(run, precision=precision, merge=True, log=log, command="dianjing eval",
                                device=device)
    kind = "run" if is_run(run) else "model"
    done, taken = [], set()
    for ef in files:
        result, rows = evaluate_file(model, tok, chat, ef, metric=metric, settings=settings,
                                     max_new_tokens=max_new_tokens, perplexity_=perplexity_, log=log)
        result = {"run": str(run), "kind": kind, "template": chat.name, "system_prompt": system, **result}
        path, gens = output_paths(run, ef.path, out, len(files) > 1, taken)
        write(result, rows, path, gens)
        log(f"{ef.path}: scores written to {path}, generations to {gens}")
        done.append((result, path))
    return done
