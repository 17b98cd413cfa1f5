"""dianjing mix: build a FLAN-style multitask training file from a mixture YAML (and import T0)."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("mix", help="build a multitask instruction mixture (FLAN-style) for `dianjing train`",
                       description="Render the tasks of a mixture's registries through their templates, mix them "
                                   "(examples-proportional with a per-dataset cap, or temperature), keep the "
                                   "held-out clusters out (checked), and write a JSONL that `dianjing train --data "
                                   "FILE` reads, plus FILE.report.json with what every task and template gave. "
                                   "MIXTURE is a YAML file or builtin:NAME (shipped examples: builtin:toy-mixture, "
                                   "builtin:t0-sentiment-heldout).")
    p.add_argument("mixture", nargs="?", metavar="MIXTURE", help="mixture YAML, or builtin:NAME")
    p.add_argument("--out", "-o", help="output JSONL (default: <mixture name>.jsonl); with --import-t0, the registry YAML")
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="override a mixture key, e.g. --set mixing.total=2000 --set held_out=[topic]")
    p.add_argument("--import-t0", metavar="DIR",
                   help="instead: write the registry built from a folder of rendered T0 files to --out")
    p.set_defaults(func=run)


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.errors import ConfigError

    if args.import_t0:
        from dianjing.generalist.registry import dump_registry
        from dianjing.generalist.t0 import build_registry

        reg = build_registry(args.import_t0, log=log)
        out = Path(args.out or "t0-registry.yaml")
        out.write_text("# built by `dianjing mix --import-t0` (dianjing/generalist/t0.py documents the clusters)\n"
                       + dump_registry(reg), encoding="utf-8")
        clusters = sorted({t.cluster for t in reg.tasks})
        log(f"{len(reg.tasks)} tasks in clusters {', '.join(clusters)}")
        print(out)
        return 0
    if not args.mixture:
        raise ConfigError("name a mixture YAML", fix="dianjing mix MIXTURE.yaml --out FILE (or --import-t0 DIR)")
    from dianjing.generalist.mix import build_mixture, write_mixture
    from dianjing.generalist.registry import load_mixture

    mix = load_mixture(args.mixture, args.set)
    result = build_mixture(mix, log=log)
    out = Path(args.out) if args.out else Path(Path(mix.origin).stem + ".jsonl")
    data, report = write_mixture(result, out, mix.output_format)
    _print(result.report)
    log(f"wrote {result.report['total']} examples to {data} and the report to {report}")
    log(f"train on it:  dianjing train --data {data}")
    if mix.held_out:
        log(f"then score the held-out clusters:  dianjing eval RUN --mixture {args.mixture} --held-out")
    print(data)
    return 0


def _print(rep: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"mixture: {rep['total']} examples, seed {rep['seed']}, {rep['mixing']['method']} mixing, "
                    f"cap {rep['mixing']['cap']}")
    for c in ("cluster", "tasks", "datasets", "examples", "templates used", "capped"):
        t.add_column(c, justify="left" if c == "cluster" else "right")
    by_cluster: dict[str, list] = {}
    for name, info in rep["tasks"].items():
        by_cluster.setdefault(info["cluster"], []).append(info)
    for c, infos in sorted(by_cluster.items()):
        ds = {i["dataset"] for i in infos}
        t.add_row(c, str(len(infos)), str(len(ds)), str(sum(i["examples"] for i in infos)),
                  str(sum(len(i["templates"]) for i in infos)),
                  str(sum(1 for d in ds if d in rep["caps_applied"])))
    for c, tasks in rep["held_out"].items():
        t.add_row(f"[dim]{c} (held out)[/]", str(len(tasks)), "", "0", "", "")
    Console(stderr=True).print(t)
