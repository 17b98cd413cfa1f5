"""dianjing train: fine-tune a base model on instruction data."""

from __future__ import annotations

from pathlib import Path

from dianjing.cli.common import add_config_options, config_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a model (no arguments: the default model on the default data)",
                       description="Fine-tune a pre-trained model on instruction data. Every config key can be "
                                   "set with --set section.key=value.")
    add_config_options(p)
    p.add_argument("--output-dir", "-o", help="run folder (default: runs/<date>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last complete checkpoint")
    p.set_defaults(func=run)


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.train.loop import resume, train

    if args.resume:
        run_dir, summary = resume(Path(args.resume), log=log)
    else:
        cfg = config_from_args(args)
        if args.output_dir:
            cfg.train.output_dir = args.output_dir
        run_dir, summary = train(cfg, log=log)
    log(f"\ndone: {summary['steps']} steps, {summary['tokens']} tokens "
        f"({summary['supervised_tokens']} supervised) in {summary['wall_time_s']:.0f}s, "
        f"{summary['tokens_per_s']:.0f} tokens/s, peak memory {summary['peak_rss_mb'] / 1024:.1f} GiB")
    log(f"run folder: {run_dir}")
    if summary.get("task", "sft") == "sft":
        log(f"try it:     dianjing chat {run_dir}")
    else:
        if summary.get("final_eval"):
            log("held-out: " + ", ".join(f"{k} {v:.4f}" for k, v in summary["final_eval"].items()))
        log(f"try it:     dianjing predict {run_dir} FILE   |   dianjing eval {run_dir} --data FILE")
    print(run_dir)
    return 0
