"""What loading a model and its tokenizer costs in resident memory, the way a bf16 run loads them.

Each case runs in its own process (so its peak, ru_maxrss, is its own) and prints the resident set
after the imports, after the step and the peak:

  tokenizer        load_tokenizer, then let it go as the chat route does (release and malloc_trim)
  fp32 file        a converted GGUF folder's fp32 weights loaded in bf16 by transformers (dianjing
                   before 2026-12-02, and what any fp32 folder costs)
  bf16 copy        dianjing's load_model: the bf16 copy written beside the converted folder once

    python bench/load_memory.py --model gemma-3-270m
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(case: str, model: str) -> dict:
    import gc

    import torch  # noqa: F401  (counted in "imports")
    import transformers  # noqa: F401

    from dianjing.models.load import load_model, load_tokenizer, low_precision_copy, resolve_model

    path = resolve_model(model, log=lambda *_: None)
    low_precision_copy(path, torch.bfloat16, log=lambda *_: None)  # written once, before anything is measured
    gc.collect()
    out = {"case": case, "imports_mb": round(rss_mb())}
    if case == "tokenizer":
        from dianjing.train.memory import return_freed_memory

        tok = load_tokenizer(path, log=lambda *_: None)
        out["loaded_mb"] = round(rss_mb())
        del tok
        gc.collect()
        return_freed_memory()
        out["released_mb"] = round(rss_mb())
    elif case == "fp32 file":
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, use_safetensors=True)
        sum(float(p.sum()) for p in m.parameters())  # touch every weight, as a step does (no fp32 copy)
        out["loaded_mb"] = round(rss_mb())
    else:
        m = load_model(path, torch.bfloat16, log=lambda *_: None)
        sum(float(p.sum()) for p in m.parameters())
        out["loaded_mb"] = round(rss_mb())
    out["peak_mb"] = round(peak_mb())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.model)), flush=True)
        return
    print(f"{args.model}: resident memory in MB (each case in a fresh process; weights touched once after loading)")
    print(f"{'case':<12} {'imports':>8} {'loaded':>8} {'released':>9} {'peak':>8}")
    for case in ("tokenizer", "fp32 file", "bf16 copy"):
        p = subprocess.run([sys.executable, __file__, "--model", args.model, "--worker", case],
                           capture_output=True, text=True)
        line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode or not line:
            print(f"{case:<12} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
            continue
        r = json.loads(line[-1][7:])
        print(f"{case:<12} {r['imports_mb']:>8} {r['loaded_mb']:>8} {r.get('released_mb', '–'):>9} {r['peak_mb']:>8}")
        print(json.dumps(r))


if __name__ == "__main__":
    main()
