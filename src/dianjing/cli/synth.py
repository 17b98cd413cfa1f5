"""dianjing synth: grow an instruction dataset from seed tasks with a teacher model."""

from __future__ import annotations

from dianjing.cli.common import add_device_option, check_device, choices
from dianjing.teacher.settings import GenerateSettings


def add_parser(sub) -> None:
    p = sub.add_parser(
        "synth", help="generate instruction data with a teacher model (self-instruct / Alpaca-style)",
        description="Grow an instruction dataset from seed tasks with a teacher model (any OpenAI-compatible "
                    "server, or a local model): new instructions, a classification check, inputs, outputs; "
                    "filtered, de-duplicated with ROUGE-L, and written as alpaca JSONL with provenance that "
                    "`dianjing train --data OUT` reads. Killed runs continue where they stopped when started "
                    "again with the same command.")
    p.add_argument("config", nargs="?", help="YAML config (sections teacher, generate, filters, output)")
    p.add_argument("--teacher-url", metavar="URL", action="append",
                   help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1; repeated, several servers of the "
                        "same model share the requests (one that fails is taken out for a while)")
    p.add_argument("--teacher-model", metavar="NAME", help="model name the server serves")
    p.add_argument("--seeds", metavar="FILE", help="seed tasks in self-instruct's seed_tasks.jsonl format "
                                                   "(default: the built-in zh-TW / English seeds)")
    p.add_argument("--out", "-o", metavar="FILE", help="output JSONL (default synth.jsonl); the report and the work "
                                                       "folder go beside it")
    p.add_argument("--num-instructions", "-n", type=int, metavar="N",
                   help="instructions to keep (alpaca mode: examples)")
    p.add_argument("--mode", choices=choices(GenerateSettings, "mode"),
                   help="staged self-instruct (default) or one-shot Alpaca-style batches")
    p.add_argument("--stage", default="all", choices=["instructions", "classify", "instances", "outputs", "all"],
                   help="run the stages up to this one and stop, to inspect the work folder (default: all)")
    add_device_option(p, default=None, help="a local teacher (teacher.local_model): where it computes, auto "
                                            "(CUDA when present, else Apple's MPS, else the CPU), cpu, cuda, cuda:N "
                                            "or mps (default: teacher.device, auto)")
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, e.g. --set teacher.max_concurrency=16 (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.errors import ConfigError
    from dianjing.teacher.pipeline import Synth
    from dianjing.teacher.settings import check_teacher, load_synth_config

    overrides = []
    for flag, key in (("teacher_model", "teacher.model"),
                      ("seeds", "generate.seeds"), ("out", "output.out"),
                      ("num_instructions", "generate.num_instructions"), ("mode", "generate.mode"),
                      ("device", "teacher.device")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_synth_config(args.config, overrides + args.set)
    if args.teacher_url is not None:  # URLs on the command line win over the YAML's, and over a local model
        cfg.teacher.base_url = args.teacher_url[0] if len(args.teacher_url) == 1 else args.teacher_url
        cfg.teacher.local_model = None
    check_teacher(cfg)
    if cfg.teacher.local_model:  # a GPU this machine lacks fails now, not after the first stage's prompts
        check_device(cfg.teacher.device, key="--device" if args.device is not None else "teacher.device")
    elif args.device is not None:
        raise ConfigError("--device is for a local teacher (teacher.local_model); a server teacher computes "
                          "wherever its server runs", fix="leave --device out, or use --set teacher.local_model=PATH")
    synth = Synth(cfg, log)
    log(f"teacher: {', '.join(cfg.teacher.urls()) or 'local ' + str(cfg.teacher.local_model)}"
        f"{' model ' + cfg.teacher.model if cfg.teacher.model else ''}; terms of use: {cfg.teacher.terms_of_use}")
    log(f"work folder: {synth.work}")
    report = synth.run(args.stage)
    log(f"\nkept {report['kept']} examples in {synth.out}; {report['rejected_total']} rejected")
    for why, n in list(report["rejected"].items())[:8]:
        log(f"  rejected {n}: {why}")
    req = report["requests"]
    log(f"requests: {req['paid_replies']} replies, {req['retries']} retries, "
        f"{req['this_run']['answered_from_journal']} answered from the journal this run; "
        f"tokens {report['tokens']['total']}"
        + (f"; cost ≈ {report['cost_estimate']['amount']:.4f} {report['cost_estimate']['currency']}"
           if report["cost_estimate"] else ""))
    log(f"report: {synth.report_path}")
    if report["complete"]:
        log(f"train on it: dianjing train --data {synth.out}")
    else:
        log(f"stopped after --stage {args.stage}; run again with --stage all (or another stage) to continue")
    print(synth.out)
    return 0
