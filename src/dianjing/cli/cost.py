"""dianjing cost: what a finished run cost here, and what its training FLOPs would take and cost on common GPUs."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("cost", help="a run's tokens, FLOPs, time and money; projected to common GPUs",
                       description="Read RUN/summary.json (tokens, FLOPs, wall time, device, MFU) and print what the "
                                   "run cost (device-hours, and money at --price-per-hour), what the same training "
                                   "FLOPs would take on common accelerators at an assumed MFU (and cost, with "
                                   "--gpu-price), and the priced tokens of a synth report or a judge result (--add). "
                                   "Written to RUN/eval/cost.json.")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--price-per-hour", type=float, metavar="P", help="price of one device-hour of the run's device")
    p.add_argument("--currency", default="USD")
    p.add_argument("--mfu", type=float, default=0.4, help="assumed MFU of the projections (default 0.4)")
    p.add_argument("--gpu-price", nargs="+", default=[], metavar="NAME=PRICE",
                   help="price per hour of accelerators in the projection, e.g. H100-SXM=3.0 A100=1.5")
    p.add_argument("--add", nargs="+", default=[], metavar="FILE",
                   help="synth reports (OUT.report.json) or judge results (result.json) whose token cost joins the total")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from dianjing.cli import log
    from dianjing.errors import ConfigError
    from dianjing.eval.cost import cost_report, print_cost

    prices = {}
    for pair in args.gpu_price:
        name, eq, value = pair.partition("=")
        try:
            prices[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--gpu-price {pair!r}: expected NAME=PRICE", fix="e.g. --gpu-price H100-SXM=3.0") from None
        if not eq:
            raise ConfigError(f"--gpu-price {pair!r}: expected NAME=PRICE", fix="e.g. --gpu-price H100-SXM=3.0")
    for r in args.runs:
        rep = cost_report(r, price_per_hour=args.price_per_hour, currency=args.currency, mfu=args.mfu,
                          prices=prices, add=args.add)
        print_cost(rep)
        out = Path(r) / "eval" / "cost.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rep, indent=1, ensure_ascii=False), encoding="utf-8")
        log(f"written to {out}")
    return 0
