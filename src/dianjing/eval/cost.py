"""What a run cost, and what it would cost elsewhere: from summary.json, a price per device-hour, and the
dense bf16 peaks of common accelerators.

A finished run's summary.json has its tokens, supervised tokens, estimated FLOPs (the route's FLOPs per
token × tokens, forward and backward), wall time, device, processes and MFU against the matmul peak
measured on its device. From them:

* **this run**: device-hours = wall time × processes; money = device-hours × `price_per_hour`, when one
  is given (there is no default: prices depend on the provider and change);
* **projections**: the same FLOPs on one accelerator of ACCELERATORS at an assumed MFU (40% by default,
  a good dense-transformer training run; a small model or short sequences get less), time = FLOPs /
  (peak × MFU), and money where a price for that accelerator is given. Time outside the training steps
  (loading, evaluation, checkpoints) is not in it: the projection is the training steps' time. The
  assumption is printed with the table and written into the JSON;
* **tokens bought**: the teacher's (`dianjing synth` report) and the judge's (`dianjing judge` result)
  `cost_estimate`, when those were priced, join the total.
"""

from __future__ import annotations

import json
from pathlib import Path

from dianjing.errors import ConfigError

# dense (no sparsity) bf16 tensor peaks from the vendors' data sheets, TFLOP/s
ACCELERATORS: dict[str, float] = {
    "H200": 989.4,
    "H100-SXM": 989.4,
    "H100-PCIe": 756.0,
    "A100": 312.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX-4090": 165.2,
    "MI300X": 1307.4,
    "TPU-v5e": 197.0,
}
DEFAULT_MFU = 0.4


def read_summary(run: str | Path) -> dict:
    p = Path(run) / "summary.json"
    if not p.is_file():
        raise ConfigError(f"{run} has no summary.json: not a finished run",
                          fix="pass a folder `dianjing train` finished (dianjing train --resume RUN finishes a stopped one)")
    return json.loads(p.read_text(encoding="utf-8"))


def this_run(summary: dict, price_per_hour: float | None = None, currency: str = "USD") -> dict:
    wall = float(summary.get("wall_time_s") or 0.0)
    procs = int(summary.get("processes") or 1)
    hours = wall * procs / 3600
    flops = summary.get("estimated_flops")
    out = {k: summary.get(k) for k in ("tokens", "supervised_tokens", "estimated_flops", "wall_time_s", "device",
                                        "device_name", "processes", "mfu", "matmul_peak_gflops")}
    out["device_hours"] = round(hours, 6)
    out["achieved_gflops"] = round(flops / wall / 1e9, 2) if flops and wall else None
    out["cost"] = {"amount": round(hours * price_per_hour, 6), "currency": currency,
                   "price_per_device_hour": price_per_hour} if price_per_hour is not None else None
    return out


def projections(flops: float | None, mfu: float = DEFAULT_MFU, prices: dict[str, float] | None = None,
                currency: str = "USD") -> list[dict]:
    """The run's FLOPs on one of each accelerator at `mfu` of its dense bf16 peak."""
    if not 0 < mfu <= 1:
        raise ConfigError(f"--mfu {mfu}: expected a fraction in (0, 1], e.g. 0.4")
    prices = prices or {}
    unknown = sorted(set(prices) - set(ACCELERATORS))
    if unknown:
        raise ConfigError(f"--gpu-price {', '.join(unknown)}: no such accelerator",
                          fix=f"the names are {', '.join(ACCELERATORS)}")
    rows = []
    for name, peak in ACCELERATORS.items():
        seconds = flops / (peak * 1e12 * mfu) if flops else None
        price = prices.get(name)
        rows.append({"accelerator": name, "bf16_peak_tflops": peak, "mfu": mfu,
                     "seconds": round(seconds, 3) if seconds is not None else None,
                     "cost": {"amount": round(seconds / 3600 * price, 6), "currency": currency,
                              "price_per_hour": price} if price is not None and seconds is not None else None})
    return rows


def bought(paths: list[str]) -> list[dict]:
    """The cost_estimate of synth reports and judge results (tokens bought from a teacher or a judge)."""
    out = []
    for p in paths:
        try:
            d = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"--add {p}: cannot read it as JSON ({e})",
                              fix="give a synth report (OUT.report.json) or a judge result (result.json)") from None
        est = d.get("cost_estimate") if "cost_estimate" in d else (d.get("requests") or {}).get("cost_estimate")
        tokens = d.get("tokens") or (d.get("requests") or {}).get("tokens") or {}
        kind = "teacher" if "kept" in d else "judge" if "mode" in d else "?"
        out.append({"file": str(p), "what": kind, "tokens": tokens, "cost": est})
    return out


def assumption(mfu: float) -> str:
    return (f"projection: the run's estimated training FLOPs (summary.json) on one accelerator at {mfu:.0%} of its "
            "dense bf16 peak (vendors' data sheets); the training steps only, not loading, evaluation or "
            "checkpoints; money only where a price per hour is given (--gpu-price NAME=PRICE)")


def cost_report(run: str, *, price_per_hour: float | None = None, currency: str = "USD", mfu: float = DEFAULT_MFU,
                prices: dict[str, float] | None = None, add: list[str] | None = None) -> dict:
    s = read_summary(run)
    extra = bought(add or [])
    here = this_run(s, price_per_hour, currency)
    priced = [x["cost"]["amount"] for x in extra if x["cost"] and x["cost"].get("currency", currency) == currency]
    total = None
    if here["cost"] is not None:
        total = {"amount": round(here["cost"]["amount"] + sum(priced), 6), "currency": currency,
                 "includes": ["this run's device time", *(x["file"] for x in extra if x["cost"])]}
    return {"run": str(run), "this_run": here, "projections": projections(s.get("estimated_flops"), mfu, prices, currency),
            "assumption": assumption(mfu), "bought": extra, "total": total}


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def print_cost(rep: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    h = rep["this_run"]
    money = f"; {_money(h['cost'])}" if h["cost"] else "; no --price-per-hour given"
    console.print(f"[bold]{rep['run']}[/]: {h['tokens']} tokens ({h['supervised_tokens']} supervised), "
                  f"{h['estimated_flops'] or 0:.3g} FLOPs in {_dur(h['wall_time_s'])} on {h['device_name'] or h['device']}"
                  f" × {h['processes']}: {h['device_hours']:.4f} device-hours{money}; MFU {h['mfu']} of the measured "
                  f"{h['matmul_peak_gflops']} GFLOP/s matmul peak")
    t = Table(title="the same training FLOPs elsewhere")
    for name in ("accelerator", "bf16 peak TFLOP/s", "MFU", "time", "cost"):
        t.add_column(name, justify="left" if name == "accelerator" else "right")
    for r in rep["projections"]:
        t.add_row(r["accelerator"], f"{r['bf16_peak_tflops']:g}", f"{r['mfu']:.0%}", _dur(r["seconds"]),
                  _money(r["cost"]) if r["cost"] else "–")
    console.print(t)
    console.print(rep["assumption"])
    for b in rep["bought"]:
        c = b["cost"]
        console.print(f"{b['what']} tokens ({b['file']}): {b['tokens']}; "
                      + (_money(c) if c else "not priced (set the price_per_1m_* keys)"))
    if rep["total"]:
        console.print(f"total: {_money(rep['total'])}")


def _money(c: dict) -> str:
    return f"{c['amount']:.4g} {c['currency']}"
