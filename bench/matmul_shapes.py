"""The body's matrix products of a training step, by shape: where the time of "body matmuls" goes.

    python bench/matmul_shapes.py --model gemma-3-270m --data ../shared/data/instruct/alpaca_en_demo.json \
        --precision bf16 --compile on [--set adapter.fold=false]

Builds the run `dianjing train` would build (the options of bench/step_budget.py), takes one warm-up
step, profiles 3 steps with torch.profiler, and sums the self time and FLOPs of every aten::mm / addmm /
bmm outside the output layer by (op, inner dimension K, output columns N, dtypes). With LoRA r = 16,
the rows with K = 16 or N = 16 are the adapter's rank-r products (bench/results/2026-12-02-lora-shapes.txt).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import step_budget as sb  # noqa: E402


def main(argv=None) -> int:
    from torch.profiler import ProfilerActivity, profile

    args = sb.parse_args(argv)
    steps = args.steps
    with tempfile.TemporaryDirectory(prefix="matmul-shapes-") as tmp:
        tr = sb.build_trainer(args, Path(tmp) / "run", log=lambda *a: None)
        tr.step(0)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t0 = time.perf_counter()
            for k in range(1, steps + 1):
                tr.step(k)
            wall = time.perf_counter() - t0
    agg: dict = {}
    for e in prof.events():
        if e.name not in ("aten::mm", "aten::addmm", "aten::bmm"):
            continue
        p, names = e.cpu_parent, set()
        while p is not None:
            names.add(p.name)
            p = p.cpu_parent
        if sb.OUTPUT_LABEL in names:
            continue
        s = [tuple(x) for x in e.input_shapes if isinstance(x, list) and x]
        if e.name == "aten::addmm":
            s = s[1:3]
        if len(s) < 2:
            continue
        a, b = s[0], s[1]
        dt = tuple(str(x).split(":")[-1] for x in (e.input_dtypes or [])[:2] if x)
        d = agg.setdefault((e.name, a[-1], b[-1], dt), [0.0, 0.0, 0])
        d[0] += e.self_cpu_time_total / 1e6
        d[1] += 2.0 * a[0] * a[1] * b[1] if len(a) == 2 else 2.0 * a[0] * a[1] * a[2] * b[-1]
        d[2] += 1
    total = sum(v[0] for v in agg.values())
    print(f"{steps} profiled steps: {wall / steps:.2f} s/step; body products {total / steps:.3f} s/step")
    for (name, k, n, dt), (s, fl, c) in sorted(agg.items(), key=lambda kv: -kv[1][0]):
        print(f"{name:10} K={k:5} N={n:5} {'/'.join(dt):20} {s / steps:7.3f} s/step {fl / s / 1e9 if s else 0:6.0f} "
              f"GFLOP/s  calls {c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
