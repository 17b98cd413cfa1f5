"""Where a training step's time goes, beside what each part would take at the machine's matmul peak.

    python bench/step_budget.py                                   # gemma-3-270m, the bundled data
    python bench/step_budget.py --model smollm2-135m-instruct --data ../shared/data/instruct/alpaca_en_demo.json \\
        --steps 3 --precision bf16 --compile off

The run is built exactly as `dianjing train` builds it (the same options: a CONFIG, --model, --data,
--set KEY=VALUE; --batch-size, --max-length, --precision and --compile are short for their --set): the
loop's `Trainer`, whose `step(k)` is the one step `dianjing train` takes. One warm-up step, then N
steps timed without the profiler, then the same N steps (the same batches) under torch.profiler (CPU
activity, shapes, FLOPs). Printed: a table, then one JSON line with the same figures.

Buckets, from the self CPU time of every profiled op (its time minus that of the ops it called), so
that no microsecond is counted twice; each op goes to the first bucket that claims it:

- optimizer: ops under the loop's `dianjing::optimizer` label (AdamW step, LR schedule, zero_grad) or
  `dianjing::clip` (the gradient norm and clipping);
- output layer: ops under the loss's `dianjing::output_layer` label. The sparse loss computes the head's
  logits at the supervised positions, the softmax and all its gradients inside its forward, so the
  label holds all of its work (its backward is one multiply, in "other"). With the dense loss
  (`train.logits: dense`, or a model the sparse loss cannot take) the head's products run inside the
  model: there the matmuls that have the vocabulary size among their shapes are counted here too;
  "of which products" is the matmul part of the bucket;
- attention: ops under an SDPA op (aten::scaled_dot_product_attention, the CPU flash kernel and its
  backward); with `model.attn_implementation: eager` the model's own attention matmuls are body matmuls;
- body matmuls: the transformer blocks' projections (and their adapters), forward, backward and the
  recompute of gradient checkpointing. An aten::mm / addmm / bmm / baddbmm / matmul / linear claims all it
  calls (autocast's casts to bf16 too); a matmul's autograd node (MmBackward0, ...) only its own time and
  its t / transpose / conj / sum, because gradient checkpointing recomputes a block's forward inside the
  first node that unpacks a saved tensor: the recomputed linears are body matmuls there, the rest is not;
- other: the profiled step time minus the four buckets: every other op (norms, activations, rotary,
  elementwise adapter work, copies and casts outside the matmuls, the embedding, gradient accumulation,
  compiled blocks' fused kernels) and the time between ops that no op covers (Python, dispatch, the
  profiler's own work).

FLOPs are counted at the leaf matmul ops (the profiler's with_flops figure, or 2·m·k·n from their shapes),
and for the flash attention kernel from its shapes (forward 4·B·H·L·S·D, backward twice that, over the
whole L×S score matrix: the useful-FLOP convention, no causal discount). "at peak" is those FLOPs at
`dianjing.peak.matmul_peak(device, dtype)` (measured once per machine, cached in peak.json).

The profiler's own overhead is real (a few µs per op, more with shapes recorded): both step times are
printed, and the buckets are shares of the profiled one. Numbers from a loaded machine are not
figures: measure on a quiet one (the load average is printed). Where other work holds the cores, torch's
threads also wait for each other at every parallel region: on the 2-core machine at load average 4, the
warm-up step of a 2-thread SmolLM2 run (193 tokens) took 57 s. Try `--set train.threads=1` there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without `pip install -e .`

BUCKETS = ("body matmuls", "attention", "output layer", "optimizer", "other")
OPTIMIZER_LABELS = ("dianjing::optimizer", "dianjing::clip")
OUTPUT_LABEL = "dianjing::output_layer"
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::matmul",
           "aten::linear", "aten::mv", "aten::addmv", "aten::_addmm_activation"}
MATMUL_LEAVES = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::mv",
                 "aten::addmv", "aten::_addmm_activation"}
MATMUL_NODES = {"MmBackward0", "AddmmBackward0", "BmmBackward0", "BaddbmmBackward0", "MvBackward0",
                "AddmvBackward0", "LinearBackward0"}
# what a matmul's autograd node itself calls; anything else under it is gradient checkpointing's recompute
# of the block's forward (it runs inside the first node that unpacks a saved tensor, often MmBackward0)
# batched products: the models' projections run as mm / addmm (their inputs flattened to 2-D), so a bmm is the
# written-out attention's QKᵀ or ·V (model.attn_implementation auto on a CPU); its softmax and mask are fused into
# the compiled block's kernels and stay in "other"
BATCHED = {"aten::bmm", "aten::baddbmm", "BmmBackward0", "BaddbmmBackward0"}
NODE_PARTS = {"aten::t", "aten::transpose", "aten::conj", "aten::resolve_conj", "aten::sum"}
ATTENTION_MARKS = ("scaled_dot_product", "scaleddotproduct", "flash_attention", "flashattention",
                   "efficient_attention")


# ----------------------------------------------------------------------------- bucketing
def _matmul_flops(name: str, shapes: list) -> float:
    """2·m·k·n (times the batch) of a leaf matmul op from its recorded input shapes; 0 if they are not there."""
    s = [list(x) for x in shapes if isinstance(x, (list, tuple))]
    try:
        if name in ("aten::mm", "aten::addmm", "aten::_addmm_activation"):
            a, b = (s[0], s[1]) if name == "aten::mm" else (s[1], s[2])
            return 2.0 * a[0] * a[1] * b[1]
        if name in ("aten::bmm", "aten::baddbmm", "aten::addbmm"):
            a, b = (s[0], s[1]) if name == "aten::bmm" else (s[1], s[2])
            return 2.0 * a[0] * a[1] * a[2] * b[2]
        if name in ("aten::mv", "aten::addmv"):
            a = s[0] if name == "aten::mv" else s[1]
            return 2.0 * a[0] * a[1]
    except (IndexError, TypeError):
        pass
    return 0.0


def _attention_flops(name: str, shapes: list) -> float:
    """A fused attention kernel's useful FLOPs from q [B,H,L,D] and k [B,Hk,S,D]: 4·B·H·L·S·D forward,
    8·B·H·L·S·D backward (whose first input is the output's gradient)."""
    four = [list(x) for x in shapes if isinstance(x, (list, tuple)) and len(x) == 4]
    backward = "backward" in name.lower()
    if len(four) < (3 if backward else 2):
        return 0.0
    q, k = (four[1], four[2]) if backward else (four[0], four[1])
    return (8.0 if backward else 4.0) * q[0] * q[1] * q[2] * k[2] * q[3]


def _is_attention(name: str) -> bool:
    low = name.lower()
    return any(m in low for m in ATTENTION_MARKS)


def _attention(chain) -> bool:
    """An attention op or node itself, or anything an aten attention op calls. An autograd node claims
    only its own time: the recompute of gradient checkpointing can run inside it."""
    return _is_attention(chain[0].name) or any(c.name.startswith("aten::") and _is_attention(c.name)
                                               for c in chain[1:])


def _matmul(chain) -> int | None:
    """The index in `chain` (an event, then its ancestors) of the matmul op or node that claims the event:
    an aten matmul op claims all it calls (autocast's casts too); a node, NODE_PARTS and its own time, unless
    it holds a recompute (whose Python time is then the node's self time)."""
    for i, c in enumerate(chain):
        if c.name in MATMULS:
            return i
        if c.name in MATMUL_NODES:
            if i == 0:
                return 0 if all(k.name in NODE_PARTS or k.name in MATMULS for k in c.cpu_children) else None
            return i if chain[i - 1].name in NODE_PARTS else None
    return None


def classify(events, vocab: int | None = None, dense: bool = False) -> dict:
    """Self CPU time (s) and FLOPs per bucket over `events` (torch.profiler's FunctionEvents), by the rules
    of the module docstring; "other" here is other ops only (the caller adds the time between ops). Also
    the output layer's matmul part, and the self time of all events (to find the time no op covers)."""
    out = {b: {"s": 0.0, "flops": 0.0} for b in BUCKETS}
    products = {"s": 0.0, "flops": 0.0}
    total_self = 0.0
    other_ops: dict[str, float] = {}
    for e in events:
        chain, p = [], e
        while p is not None:  # the event and its ancestors, innermost first
            chain.append(p)
            p = p.cpu_parent
        names = {c.name for c in chain}
        mm = _matmul(chain)
        if names & set(OPTIMIZER_LABELS):
            b = "optimizer"
        elif OUTPUT_LABEL in names:
            b = "output layer"
        elif _attention(chain) or (mm is not None and chain[mm].name in BATCHED):
            b = "attention"
        elif mm is None:
            b = "other"
        # the dense loss: the head's products run inside the model; they have the vocabulary among their
        # dimensions (no body matmul of a real model does)
        elif dense and vocab and any(vocab in dims for c in chain[:mm + 1] for dims in (c.input_shapes or [])
                                     if isinstance(dims, list)):
            b = "output layer"
        else:
            b = "body matmuls"
        self_s = e.self_cpu_time_total / 1e6
        flops = 0.0
        if e.name in MATMUL_LEAVES:
            flops = float(getattr(e, "flops", 0) or 0) or _matmul_flops(e.name, e.input_shapes or [])
        elif b == "attention" and e.name.startswith("aten::") and _is_attention(e.name) \
                and not any(_is_attention(c.name) for c in e.cpu_children):
            flops = _attention_flops(e.name, e.input_shapes or [])
        total_self += self_s
        out[b]["s"] += self_s
        out[b]["flops"] += flops
        if b == "other":
            other_ops[e.name] = other_ops.get(e.name, 0.0) + self_s
        if b == "output layer" and mm is not None:
            products["s"] += self_s
            products["flops"] += flops
    top = sorted(other_ops.items(), key=lambda kv: -kv[1])[:10]
    return {"buckets": out, "output_products": products, "self_s": total_self, "other_top": top}


# ----------------------------------------------------------------------------- measuring
def measure(trainer, steps: int, peak_gflops: float | None = None, log=lambda *_: None) -> dict:
    """One warm-up step, `steps` steps timed, the same steps profiled; the step budget as a dict."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from dianjing.peak import matmul_peak

    if steps < 1:
        raise ValueError(f"steps={steps}: profile at least one step")
    if peak_gflops is None:
        found = matmul_peak(trainer.device, trainer.precision.dtype)
        peak_gflops = found.gflops
        peak_label = f"{found.label} {found.family}, {'cached' if found.cached else 'measured now'}"
    else:
        peak_label = "given"

    def one(k: int, what: str) -> tuple[float, int, int]:
        t0 = time.perf_counter()
        loss, gnorm, n_targets, n_tokens = trainer.step(k)
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            trainer.optimizer.zero_grad(set_to_none=True)  # what the loop does with a bad step
        dt = time.perf_counter() - t0
        log(f"  {what} step {k}: {dt:.2f} s, {n_tokens} tokens")
        return dt, n_tokens, n_targets

    one(0, "warm-up")  # the allocator, kernels, and the compile of compiled blocks
    plain = [one(k, "timed") for k in range(1, steps + 1)]
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        profiled = [one(k, "profiled") for k in range(1, steps + 1)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    vocab = trainer.setup.loss.head.weight.shape[0] if getattr(trainer.setup.loss, "head", None) is not None else None
    dense = getattr(trainer.setup.loss, "mode", "sparse") == "dense"
    found = classify(prof.events(), vocab=vocab, dense=dense)
    log(f"  bucketed the profile in {time.perf_counter() - t0:.1f} s")

    wall_prof = sum(t for t, _, _ in profiled) / steps
    wall_plain = sum(t for t, _, _ in plain) / steps
    tokens = sum(n for _, n, _ in plain) / steps
    targets = sum(n for _, _, n in plain) / steps
    rows = {}
    for b in BUCKETS:
        s, flops = found["buckets"][b]["s"] / steps, found["buckets"][b]["flops"] / steps
        if b == "other":  # with the time no op covers
            s = wall_prof - sum(rows[x]["s"] for x in BUCKETS[:-1])
        rows[b] = _row(s, flops, wall_prof, peak_gflops)
    prod = found["output_products"]
    useful = trainer.setup.flops_per_token * tokens + trainer.setup.flops_per_target * targets
    return {
        "model": trainer.cfg.model.name, "device": str(trainer.device), "precision": trainer.precision.name,
        "compiled": bool(trainer.compiled), "logits": getattr(trainer.setup.loss, "mode", None),
        "threads": torch.get_num_threads(), "batch_size": trainer.cfg.train.batch_size,
        "max_length": trainer.cfg.data.max_length, "steps": steps,
        "tokens_per_step": tokens, "targets_per_step": targets,
        "peak_gflops": round(peak_gflops, 1), "peak": peak_label,
        "load_avg_1min": load, "cpus": os.cpu_count(),  # a loaded machine's figures are not the machine's
        "step_s_unprofiled": _sig(wall_plain, 5), "step_s_profiled": _sig(wall_prof, 5),
        "step_s_each_unprofiled": [round(t, 4) for t, _, _ in plain],
        "step_s_each_profiled": [round(t, 4) for t, _, _ in profiled],
        "buckets": rows,
        "output_layer_products": _row(prod["s"] / steps, prod["flops"] / steps, wall_prof, peak_gflops),
        "other_ops_s": _sig(found["buckets"]["other"]["s"] / steps),
        "other_top_ops_s": {name: _sig(t / steps) for name, t in found["other_top"]},
        "untraced_s": _sig(wall_prof - found["self_s"] / steps),
        "s_at_peak": _sig(sum(rows[b]["s_at_peak"] or 0 for b in BUCKETS)),
        "useful_gflop_per_step": _sig(useful / 1e9),
        "mfu": _sig(useful / max(1e-9, wall_plain) / (peak_gflops * 1e9)),
    }


def _row(s: float, flops: float, wall: float, peak_gflops: float) -> dict:
    return {"s": _sig(s), "share": _sig(s / wall) if wall > 0 else None, "gflop": _sig(flops / 1e9),
            "gflops": _sig(flops / 1e9 / s) if flops and s > 0 else None,
            "s_at_peak": _sig(flops / 1e9 / peak_gflops) if flops else None}


def _sig(x: float, digits: int = 4) -> float:
    """x to `digits` significant digits (a tiny test model's figures are not all zero)."""
    return float(f"{x:.{digits}g}")


# ----------------------------------------------------------------------------- output
def table(rec: dict) -> str:
    def fmt(x, spec):
        return "—" if x is None else format(x, spec)

    lines = [f"{rec['model']}: {rec['precision']}, logits {rec['logits']}, compiled {rec['compiled']}, "
             f"{rec['threads']} threads, batch {rec['batch_size']}, ≤{rec['max_length']} tokens; "
             f"{rec['tokens_per_step']:.0f} tokens ({rec['targets_per_step']:.0f} supervised) per step, "
             f"mean of {rec['steps']} steps; matmul peak {rec['peak_gflops']:.0f} GFLOP/s ({rec['peak']}); "
             f"load average {fmt(rec['load_avg_1min'], '.1f')} on {rec['cpus']} CPUs",
             "",
             f"{'bucket':<24}{'s/step':>9}{'share':>8}{'GFLOP':>10}{'GFLOP/s':>10}{'s at peak':>11}"]
    rows = [(b, rec["buckets"][b]) for b in BUCKETS]
    rows.insert(3, ("  of which products", rec["output_layer_products"]))
    for name, r in rows:
        lines.append(f"{name:<24}{r['s']:>9.3f}{fmt(r['share'], '.1%'):>8}{fmt(r['gflop'] or None, '.2f'):>10}"
                     f"{fmt(r['gflops'], '.1f'):>10}{fmt(r['s_at_peak'], '.3f'):>11}")
    overhead = rec["step_s_profiled"] / max(1e-9, rec["step_s_unprofiled"]) - 1
    lines += [f"{'step, profiled':<24}{rec['step_s_profiled']:>9.3f}{'100%':>8}"
              f"{'':>20}{rec['s_at_peak']:>11.3f}",
              f"{'step, not profiled':<24}{rec['step_s_unprofiled']:>9.3f}",
              "",
              f"other = {rec['other_ops_s']:.3f} s in other ops + {rec['untraced_s']:.3f} s between ops; "
              f"profiler overhead {overhead:+.0%}; useful FLOPs {rec['useful_gflop_per_step']:.1f} GFLOP/step, "
              f"MFU {rec['mfu']:.1%} (unprofiled)"]
    top = rec.get("other_top_ops_s") or {}
    if top:
        lines.append("largest other ops (self s/step): " + ", ".join(f"{k} {v:.3f}" for k, v in top.items()))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from dianjing.cli.common import add_config_options, choices
    from dianjing.config import ModelConfig, TrainConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_options(ap)
    # each is short for a --set; unset, the config's value (its defaults: 8, 512, auto, auto, as `dianjing train`)
    ap.add_argument("--batch-size", type=int, help="train.batch_size (default 8)")
    ap.add_argument("--max-length", type=int, help="data.max_length (default 512)")
    ap.add_argument("--precision", choices=choices(ModelConfig, "precision"), help="model.precision (default auto)")
    ap.add_argument("--compile", choices=choices(TrainConfig, "compile"),
                    help="train.compile (default auto; a cold compile makes the warm-up step long)")
    ap.add_argument("--steps", type=int, default=3, help="steps timed, then profiled, after one warm-up (default 3)")
    ap.add_argument("--json", metavar="FILE", help="also append the JSON line to FILE")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps {args.steps}: profile at least one step")
    short = {"train.batch_size": args.batch_size, "data.max_length": args.max_length,
             "model.precision": args.precision, "train.compile": args.compile}
    args.set = [f"{k}={v}" for k, v in short.items() if v is not None] + args.set
    return args


def build_trainer(args: argparse.Namespace, run_dir: Path, log=print):
    """The Trainer `dianjing train` would build from these options, writing (nothing, here) to run_dir."""
    from dianjing.cli.common import config_from_args
    from dianjing.errors import DianjingError
    from dianjing.train.loop import Trainer

    cfg = config_from_args(args, log=log)
    if cfg.task.type != "sft":
        raise DianjingError(f"task.type {cfg.task.type}: the step budget is for the chat SFT route (its output "
                            "layer is the LM head the sparse loss applies at the supervised positions)",
                            fix="drop --task / task.type, or profile a specialist run by hand with torch.profiler")
    cfg.train.output_dir = str(run_dir)
    return Trainer(cfg, run_dir, log=log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    err = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731 — stdout is the table and the JSON
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # under `timeout` too the temporary folder goes
    from dianjing.errors import DianjingError

    with tempfile.TemporaryDirectory(prefix="step-budget-") as tmp:
        try:
            trainer = build_trainer(args, Path(tmp) / "run", log=err)
        except DianjingError as e:
            err(f"error: {e}")
            return 2
        err(f"step budget: 1 warm-up step, {args.steps} timed, the same {args.steps} profiled")
        rec = measure(trainer, args.steps, log=err)
    print(table(rec))
    line = json.dumps(rec)
    print(line)
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
