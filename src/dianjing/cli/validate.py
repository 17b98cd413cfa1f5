"""dianjing validate: check a config or a data file and show what training would see."""

from __future__ import annotations

from dianjing.cli.common import add_config_options, config_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="check a config or data file; show rendered examples and counts",
                       description="Render a few examples with the supervised tokens marked, and count "
                                   "tokens, supervised tokens, truncated and dropped examples.")
    add_config_options(p)
    p.add_argument("--show", type=int, default=3, help="how many examples to print (default 3)")
    p.add_argument("--no-color", action="store_true", help="mark supervised tokens with [[…]] instead of colour")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from dianjing.cli import log
    from dianjing.data.load import load_conversations
    from dianjing.data.render import RenderStats, render_all, show
    from dianjing.data.templates import choose_template
    from dianjing.models.load import load_tokenizer, resolve_model

    cfg = config_from_args(args)
    console = Console(highlight=False, no_color=args.no_color)
    path = resolve_model(cfg.model.name, log=log)
    tok = load_tokenizer(path, cfg.model.trust_remote_code, log=log)
    template, why = choose_template(cfg.data.template, tok)
    log(why)
    convs, report = load_conversations(cfg.data, log=log)
    stats = RenderStats()
    rendered = render_all(convs, tok, template, cfg.data.max_length, cfg.data.loss_on, stats)
    for r in rendered[: args.show]:
        console.rule(f"{r.source}  ({len(r.input_ids)} tokens, {r.n_supervised} supervised"
                     + (", truncated" if r.truncated else "") + ")")
        if args.no_color:
            console.print(show(r, tok, color=False), markup=False)
        else:
            console.print(show(r, tok, color=True))
    console.rule("summary")
    for f in report.files:
        console.print(f"{f['path']}: format {f['format']}{' (detected)' if f['detected'] else ''}, "
                      f"{f['records']} records, {f['kept']} read", markup=False)
    s = stats.summary()
    console.print(f"examples {s['examples']}, kept {s['kept']}, truncated {s['truncated']} "
                  f"(max_length {cfg.data.max_length}), tokens {s['tokens']}, "
                  f"supervised tokens {s['supervised_tokens']}", markup=False)
    for why_, n in stats.dropped.items():
        console.print(f"dropped {n}: {why_}", markup=False)
    for why_, n in report.skipped.items():
        console.print(f"skipped {n} records: {why_}", markup=False)
    for e in report.first_errors:
        console.print(f"  e.g. {e}", markup=False)
    return 0
