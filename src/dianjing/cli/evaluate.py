"""dianjing eval: score a specialist run on a labelled file; metrics printed and saved in the run folder."""

from __future__ import annotations

import json
from pathlib import Path

from dianjing.cli.common import add_device_option, check_device, choices
from dianjing.config import DataConfig, ModelConfig


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a run on labelled data (accuracy/F1, entity F1, EM/F1) or on "
                                    "a mixture's held-out task clusters",
                       description="Predict on a labelled file with a trained specialist run and score it: "
                                   "accuracy and macro-F1 (classify/pair), entity-level P/R/F1 (tag), "
                                   "EM and F1 (extract-qa, character-level for Chinese). The metrics are "
                                   "written to RUN/eval/<file name>.json. "
                                   "With --mixture M.yaml --held-out: score a generative run (or a bare model, "
                                   "for the baseline) on the clusters M holds out: option log-likelihood accuracy "
                                   "and exact match of generated text for classification, ROUGE-L or EM/F1 for "
                                   "generative tasks, per cluster and template with the spread over templates; "
                                   "written to RUN/eval/heldout-<mixture>.json.")
    p.add_argument("run", metavar="RUN", help="run folder printed by `dianjing train` (with --held-out also a "
                                              "model: folder, hub id or gemma-3-270m)")
    p.add_argument("--data", "-d", nargs="+", metavar="FILE", help="labelled data files (specialist runs)")
    p.add_argument("--mixture", metavar="MIXTURE.yaml", help="generalist: the mixture the run was trained on")
    p.add_argument("--held-out", action="store_true", help="with --mixture: score its held-out clusters")
    p.add_argument("--per-task", type=int, metavar="N", help="held-out examples per task (default: the mixture's "
                                                             "eval.max_per_task)")
    p.add_argument("--shots", type=int, metavar="K", help="few-shot exemplars per held-out prompt (default: the "
                                                          "mixture's eval.shots, 0)")
    p.add_argument("--no-generate", action="store_true",
                   help="held-out: skip generation (option ranking only; saves the decoding steps)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="held-out generative tasks (default 64)")
    p.add_argument("--max-prompt-tokens", type=int, default=512,
                   help="held-out: longer prompts lose their middle (default 512)")
    p.add_argument("--precision", choices=choices(ModelConfig, "precision"), default="auto")
    add_device_option(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--on-error", choices=choices(DataConfig, "on_error"), default="skip",
                   help="bad records: stop at the first, or skip and count them (default)")
    p.add_argument("--out", help="metrics JSON (default RUN/eval/<first data file name>.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    check_device(args.device)  # before the mixture, the data or the model is read
    if args.mixture or args.held_out:
        return run_heldout(args)
    if not args.data:
        from dianjing.errors import ConfigError

        raise ConfigError("nothing to score: give --data FILE (specialist runs) or --mixture M.yaml --held-out "
                          "(generative runs)")
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
                              max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens, log=log)
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
