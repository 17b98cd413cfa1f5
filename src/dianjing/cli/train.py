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
    p.add_argument("--continual", metavar="SEQUENCE.yaml",
                   help="learn the tasks of a sequence file one after another (lifelong learning: sequential, "
                        "lamol, replay or multitask; --set applies to the sequence file's keys; docs/lifelong.md)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train in N processes on this machine (N GPUs, or N CPU processes with gloo): runs "
                        "`torchrun --standalone --nproc-per-node N -m dianjing train ...` for you")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch(args.nproc, args.argv)
    if args.nproc < 1:
        from dianjing.errors import DianjingError

        raise DianjingError(f"--nproc {args.nproc}: the number of processes is at least 1", fix="--nproc 2, say")
    if "WORLD_SIZE" not in os.environ:
        return _train(args)
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_train)(args)  # under torchrun: a failing rank's traceback reaches torchrun's report


def launch(nproc: int, argv: list[str]) -> int:
    """torchrun with N processes on this machine, each running this same command (without --nproc)."""
    import subprocess
    import sys

    from dianjing.cli import log

    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "dianjing", *rest]
    log(f"launching {nproc} processes: torchrun --standalone --nproc-per-node={nproc} -m dianjing "
        + " ".join(rest))
    code = subprocess.call(cmd)
    if code != 0:
        run_dir = _value(rest, "--resume") or _value(rest, "--output-dir", "-o") or "RUN_DIR"
        log(f"error: the run stopped: a process failed (torchrun's report above names the rank and its exit "
            f"code or traceback); the last complete checkpoint is kept in {run_dir}/checkpoints/\n"
            f"  fix: see the first error above, then `dianjing train --nproc {nproc} --resume {run_dir}` "
            "continues from that checkpoint")
    return code


def _value(argv: list[str], *names: str) -> str | None:
    """The value of the last of these options in argv (`--opt V` or `--opt=V`)."""
    found = None
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                found = argv[i + 1]
            elif a.startswith(n + "="):
                found = a.split("=", 1)[1]
    return found


def _train(args) -> int:
    import os

    from dianjing.cli import log
    from dianjing.train.loop import resume, train

    if os.environ.get("RANK", "0") != "0":  # under torchrun one process speaks: rank 0
        log = lambda *_: None  # noqa: E731
    if args.continual or (args.resume and _continual_folder(args.resume)):
        return _continual(args, log)
    if args.resume:
        run_dir, summary = resume(Path(args.resume), log=log)
    else:
        cfg = config_from_args(args, log=log)
        if args.output_dir:
            cfg.train.output_dir = args.output_dir
        run_dir, summary = train(cfg, log=log)
    log(f"\ndone: {summary['steps']} steps, {summary['tokens']} tokens "
        f"({summary['supervised_tokens']} supervised) in {summary['wall_time_s']:.0f}s, "
        f"{summary['tokens_per_s']:.0f} tokens/s, peak memory {summary['peak_rss_mb'] / 1024:.1f} GiB"
        + (f" (RAM), {summary['peak_device_memory_mb'] / 1024:.1f} GiB on {summary['device']}"
           if summary.get("peak_device_memory_mb") else ""))
    log(f"run folder: {run_dir}")
    if summary.get("task", "sft") == "sft":
        log(f"try it:     dianjing chat {run_dir}")
    else:
        if summary.get("final_eval"):
            log("held-out: " + ", ".join(f"{k} {v:.4f}" for k, v in summary["final_eval"].items()))
        log(f"try it:     dianjing predict {run_dir} FILE   |   dianjing eval {run_dir} --data FILE")
    if os.environ.get("RANK", "0") == "0":
        print(run_dir)
    return 0


def _continual_folder(path: str) -> bool:
    """Is this a continual run (resumed as a whole)? A stage of one is refused: resuming it alone would
    not go on to the next tasks."""
    from dianjing.errors import DianjingError
    from dianjing.lifelong.driver import is_continual, is_stage

    if is_stage(path) and not is_continual(path):
        parent = Path(path).resolve().parent.parent
        raise DianjingError(f"{path} is one stage of the continual run {parent}",
                            fix=f"`dianjing train --resume {parent}` continues the whole sequence from this stage")
    return is_continual(path)


def _continual(args, log) -> int:
    """dianjing train --continual SEQUENCE.yaml (or --resume of a continual run): the stages, then the table."""
    from dianjing.errors import ConfigError
    from dianjing.lifelong.driver import resume_sequence, train_sequence

    given = [flag for flag, v in (("CONFIG", args.config), ("--data", args.data), ("--eval-data", args.eval_data),
                                  ("--task", args.task), ("--format", args.format), ("--columns", args.columns),
                                  ("--template", args.template)) if v]
    if given or args.nproc != 1:
        raise ConfigError(f"{', '.join(given) or '--nproc'} cannot be used with a continual run: its tasks, data and "
                          "settings are in the sequence file", fix="put them in the sequence file (docs/lifelong.md), "
                                                                   "or use --set KEY=VALUE on its keys")
    if args.resume:
        if args.continual or args.set or args.model:
            raise ConfigError("--resume continues a continual run with the settings it was started with",
                              fix=f"`dianjing train --resume {args.resume}` alone")
        run_dir, _ = resume_sequence(Path(args.resume), log=log)
    else:
        overrides = ([f"model.name={args.model}"] if args.model else []) + args.set
        run_dir, _ = train_sequence(args.continual, overrides, args.output_dir, log=log)
    log(f"run folder: {run_dir} (results.json, results.md, results.png; each stage in stages/)")
    print(run_dir)
    return 0
