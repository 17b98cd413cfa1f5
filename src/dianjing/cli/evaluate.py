"""dianjing eval: score a run on a file (chat runs and bare models: generated answers against references;
specialist runs: their task's labels) or a mixture's held-out clusters; metrics printed and saved."""

from __future__ import annotations

import json
from pathlib import Path

from dianjing.cli.common import add_device_option, check_device, choices
from dianjing.config import DataConfig, DataFile, ModelConfig
from dianjing.eval.chat import METRICS


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a run on a file with reference answers (chat runs, bare models), on "
                                    "labelled data (specialists) or on a mixture's held-out task clusters",
                       description="Chat runs and bare models with --data FILE: generate an answer to every prompt "
                                   "with the run's own template (greedy unless --temperature is set), batched, and "
                                   "score it against the file's reference answer (its last assistant turn): exact "
                                   "match and F1 (Chinese-aware), ROUGE-L, contains-the-answer, accuracy by option "
                                   "log-likelihood for records with options, and the references' perplexity; the "
                                   "headline metric is detected per file and said, or set with --metric. Written "
                                   "to RUN/eval/<file stem>.json with every generation in the .jsonl beside it "
                                   "(a bare model: ./eval/<stem>-<model>.json). "
                                   "Specialist runs with --data: accuracy and macro-F1 (classify/pair), entity-level "
                                   "P/R/F1 (tag), EM and F1 (extract-qa), written to RUN/eval/<file name>.json. "
                                   "With --mixture M.yaml --held-out: score a generative run (or a bare model, "
                                   "for the baseline) on the clusters M holds out: option log-likelihood accuracy "
                                   "and exact match of generated text for classification, ROUGE-L or EM/F1 for "
                                   "generative tasks, per cluster and template with the spread over templates; "
                                   "written to RUN/eval/heldout-<mixture>.json.")
    p.add_argument("run", metavar="RUN", help="run folder printed by `dianjing train`, or (chat eval, --held-out) "
                                              "a model: folder, hub id or gemma-3-270m")
    p.add_argument("--data", "-d", nargs="+", metavar="FILE",
                   help="files to score on: instruction data in any format dianjing reads, or a question set "
                        "(MT-Bench, self-instruct; builtin:questions) for chat runs; labelled data for specialists")
    p.add_argument("--metric", choices=METRICS, default="auto",
                   help="chat eval: the headline metric (default auto: accuracy when records have options, F1 for "
                        "short references, ROUGE-L for long ones; the others are computed too)")
    p.add_argument("--format", "-f", choices=choices(DataFile, "format"),
                   help="chat eval: format of the --data files (default: detected, and said)")
    p.add_argument("--columns", nargs="+", metavar="KEY=FIELD",
                   help="chat eval: the files' own field names, e.g. --columns instruction=question output=answer")
    p.add_argument("--temperature", type=float, default=0.0, help="chat eval: 0 (default) is greedy")
    p.add_argument("--top-p", type=float, default=1.0, help="chat eval, with --temperature > 0 (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="chat eval: sampling seed (default 0)")
    p.add_argument("--no-perplexity", action="store_true", help="chat eval: do not score the references' tokens")
    p.add_argument("--mixture", metavar="MIXTURE.yaml", help="generalist: the mixture the run was trained on")
    p.add_argument("--held-out", action="store_true", help="with --mixture: score its held-out clusters")
    p.add_argument("--per-task", type=int, metavar="N", help="held-out examples per task (default: the mixture's "
                                                             "eval.max_per_task)")
    p.add_argument("--shots", type=int, metavar="K", help="few-shot exemplars per held-out prompt (default: the "
                                                          "mixture's eval.shots, 0)")
    p.add_argument("--no-generate", action="store_true",
                   help="chat eval, held-out: skip generation (options and perplexity only; saves the decoding)")
    p.add_argument("--max-new-tokens", type=int, help="chat eval (default: twice the longest reference + 16, at most "
                                                      "512; past the longest option) and held-out generative "
                                                      "tasks (default 64)")
    p.add_argument("--max-prompt-tokens", type=int,
                   help="longer prompts lose their middle, counted (default: chat eval 1024, held-out 512)")
    p.add_argument("--precision", choices=choices(ModelConfig, "precision"), default="auto")
    add_device_option(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--on-error", choices=choices(DataConfig, "on_error"), default="skip",
                   help="bad records: stop at the first, or skip and count them (default)")
    p.add_argument("--out", help="metrics JSON (default RUN/eval/<first data file name>.json); chat eval with "
                                 "several files: a folder")
    p.set_defaults(func=run)


def run(args) -> int:
    check_device(args.device)  # before the mixture, the data or the model is read
    if args.mixture or args.held_out:
        return run_heldout(args)
    if not args.data:
        from dianjing.errors import ConfigError

        raise ConfigError("nothing to score: give --data FILE (specialist runs) or --mixture M.yaml --held-out "
                          "(generative runs)")
    from dianjing.run_folder import SPECIALIST, RunFolder

    if RunFolder(args.run).kind() != SPECIALIST:
        return run_chat(args)
    from dianjing.cli import log
    from dianjing.specialist.evaluate import evaluate, print_scores

    result, out = evaluate(Path(args.run), args.data, on_error=args.on_error, batch_size=args.batch_size,
                           out=args.out, log=log, device=args.device)
    print_scores(result["task"], result["scores"])
    log(f"metrics written to {out}")
    return 0


def run_heldout(args) -> int:
    """Generalist: score the clusters a mixture held out of training."""
    import re

    from dianjing.cli import log
    from dianjing.errors import ConfigError
    from dianjing.generalist.registry import load_mixture
    from dianjing.generalist.score import evaluate_heldout, print_tables
    from dianjing.infer.load import is_run, load_run

    if not (args.mixture and args.held_out):
        raise ConfigError("--mixture and --held-out go together",
                          fix="dianjing eval RUN --mixture MIXTURE.yaml --held-out")
    if args.data:
        raise ConfigError("--data is for specialist runs; with --mixture the data comes from the mixture's registries")
    mix = load_mixture(args.mixture)
    model, tok, chat = load_run(args.run, precision=args.precision, merge=True, log=log,
                                command="dianjing eval --held-out", device=args.device)
    result = evaluate_heldout(model, tok, chat, mix, per_task=args.per_task, shots=args.shots,
                              batch_size=min(args.batch_size, 64), generate=not args.no_generate,
                              max_new_tokens=args.max_new_tokens or 64, max_prompt_tokens=args.max_prompt_tokens or 512,
                              log=log)
    result["run"] = str(args.run)
    name = f"heldout-{Path(mix.origin).stem}.json"
    if args.out:
        out = Path(args.out)
    elif is_run(args.run):
        out = Path(args.run) / "eval" / name
    else:  # a bare model: never write into a model folder
        model_name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(args.run)).name)
        out = Path("eval") / f"heldout-{Path(mix.origin).stem}-{model_name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    print_tables(result, title=f"{args.run}: ")
    log(f"held-out scores written to {out}")
    return 0


def run_chat(args) -> int:
    """A chat run or a bare model on files with reference answers."""
    from dianjing.cli import log
    from dianjing.cli.common import _columns
    from dianjing.eval.chat import evaluate_chat, print_results
    from dianjing.eval.runner import Settings

    settings = Settings(temperature=args.temperature, top_p=args.top_p, seed=args.seed, batch_size=args.batch_size,
                        max_prompt_tokens=args.max_prompt_tokens or 1024, generate=not args.no_generate)
    done = evaluate_chat(args.run, args.data, fmt=args.format or "auto", columns=_columns(args.columns),
                         metric=args.metric, settings=settings, max_new_tokens=args.max_new_tokens,
                         perplexity_=not args.no_perplexity, on_error=args.on_error, out=args.out,
                         precision=args.precision, device=args.device, log=log)
    print_results([r for r, _ in done], title=f"{args.run} ({done[0][0]['template']} template)")
    return 0
