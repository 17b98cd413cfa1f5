"""dianjing report: one self-contained HTML page (inline SVG curves, tables, generations side by side) for runs."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="one HTML page about runs: curves, cost, eval and judge results, generations",
                       description="Read run folders (metrics.jsonl, summary.json, run.json, config.yaml, eval/*.json "
                                   "and .jsonl, judge results, a continual run's results.json) and write one "
                                   "self-contained HTML page: loss and learning-rate curves (inline SVG), "
                                   "throughput, cost and memory, evaluation tables, judge results, accuracy "
                                   "matrices, and the runs' answers to the same prompts side by side. "
                                   "No JavaScript, nothing loaded from the network.")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", default="report.html", help="the page to write (default report.html)")
    p.add_argument("--judge", nargs="+", default=[], metavar="DIR",
                   help="folders `dianjing judge` wrote (with result.json); those under RUN/eval/ are found anyway")
    p.add_argument("--examples", type=int, default=8, metavar="N",
                   help="example generations per data file (default 8)")
    p.add_argument("--title", default="dianjing report")
    p.set_defaults(func=run)


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.eval.report import write_report

    out = write_report(args.runs, args.out, judge=args.judge, examples=args.examples, title=args.title)
    log(f"written to {out}")
    return 0
