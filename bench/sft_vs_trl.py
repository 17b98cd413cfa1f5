"""dianjing vs TRL SFTTrainer + PEFT: same model, data, LoRA, batch, length, lr and steps.

    pip install -e '.[bench]'
    python bench/sft_vs_trl.py --model gemma-3-270m --workload alpaca --steps 5
    python bench/sft_vs_trl.py --model smollm2-135m-instruct --write-data /tmp/w   # the examples alone, for step_budget.py

Each side runs in its own process (so peak RSS is its own), alternating dianjing, TRL,
dianjing, TRL, … for --reps rounds. Both see the same examples in the same order
(a sequential sampler, no shuffling), the same LoRA initialisation (same seed, same
call order), no packing, loss on the answer tokens only; per-step losses are compared.
With --order grouped each side instead batches the same examples its own length-grouped
way (dianjing's default `train.batching: length_grouped`; TRL's
`train_sampling_strategy="group_by_length"`), which removes most padding; the batches then
differ between the sides, so the loss check is skipped and only speed and memory compare. Prints per side:
trained and supervised tokens/s, s/step, peak RSS, the loss curve, MFU, and ratios;
then one JSON line per workload.

MFU counts useful model FLOPs the same way for both sides: 6 x (non-embedding params) per
trained token + 6 x (output-layer params) per supervised token (the only logits the
objective needs), divided by the matmul peak of the run's precision: dianjing.precision's
honest peak (the best of the models' F.linear shapes and a few squares, cached per machine in
peak.json; DIANJING_REMEASURE_PEAK=1 measures it again). Work a side
does beyond that (logits of prompt and padding positions) earns it nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WORKLOADS = {
    # short prompts, long answers
    "alpaca": DATA / "instruct" / "alpaca_en_demo.json",
    # long prompts (a passage and a question), answers of a few tokens
    "longprompt": DATA / "multitask" / "t0" / "adversarial_qa_dbert_answer_the_following_q.jsonl",
}
SEED = 42
# Per-step losses must agree to this: both sides run fp32 on the same tokens with the same
# LoRA init; only the order of floating-point sums differs (sparse vs dense output layer,
# chunked reductions), which moves a mean over ~10^3 tokens by ~1e-6, far below 1e-4.
LOSS_TOLERANCE = 1e-4
# In bf16 the two sides round differently by design (dianjing: frozen weights stored in bf16,
# LoRA and loss in fp32; TRL: fp32 weights cast to bf16 per matmul under autocast, its loss in
# fp32), and bf16 keeps 8 bits of mantissa (relative error ~4e-3 per value), so per-step
# losses of ~2 agree to a few 1e-2, not 1e-6. 5e-2 still catches a different objective (a
# wrong mask or loss scale moves the loss by 0.3 or more on these sets).
BF16_TOLERANCE = 5e-2


def load_examples(workload: str, n: int, tokenizer, max_length: int) -> list[dict]:
    """The first n examples (in file order) whose prompt and answer fit in max_length tokens."""
    path = WORKLOADS[workload]
    rows = json.loads(path.read_text()) if path.suffix == ".json" else [
        json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    out = []
    for r in rows:
        if "instruction" in r:
            q = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
            a = r["output"]
        else:
            q, a = r["prompt"].strip(), r["completion"].replace("<|endoftext|>", "").strip()
        if not q.strip() or not a.strip():
            continue
        if len(tokenizer(f"USER: {q}\nAI: {a}")["input_ids"]) + 2 > max_length:
            continue
        out.append({"user": q, "assistant": a})
        if len(out) == n:
            break
    return out


def write_messages(path: Path, examples: list[dict]) -> Path:
    """The examples as the messages JSONL dianjing's side trains on (with data.template=plain)."""
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": e["user"]},
                                                     {"role": "assistant", "content": e["assistant"]}]}) + "\n"
                            for e in examples))
    return path


# ---------------------------------------------------------------------------- workers
def run_dianjing(spec: dict) -> dict:
    from dianjing.config import load_config
    from dianjing.train.loop import Trainer

    data = write_messages(Path(spec["tmp"]) / "data.jsonl", spec["examples"])
    run_dir = Path(spec["tmp"]) / f"dj-{time.time_ns()}"
    cfg = load_config(None, [
        f"model.name={spec['model_path']}", f"model.precision={spec['precision']}", f"data.files={data}",
        "data.template=plain",
        f"data.max_length={spec['max_length']}", "data.eval_fraction=0", f"train.output_dir={run_dir}",
        f"train.batch_size={spec['batch_size']}", f"train.max_steps={spec['steps']}", f"train.lr={spec['lr']}",
        "train.warmup_ratio=0", "train.schedule=cosine",
        f"train.batching={'sequential' if spec['order'] == 'file' else 'length_grouped'}",
        f"train.save_every={10**9}", f"train.eval_every={10**9}", f"train.seed={SEED}",
        "adapter.r=16", "adapter.alpha=32", "adapter.dropout=0", "train.weight_decay=0",
        *spec["dianjing_set"],
    ])
    trainer = Trainer(cfg, run_dir, log=lambda *_: None)
    trainer.save_every = 10**9
    trainer.run()
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    steps = [{"loss": r["loss"], "t": r["elapsed_s"]} for r in rows]
    per_step_tok, per_step_sup = [], []
    prev_t, prev_s = 0, 0
    for r in rows:
        per_step_tok.append(r["tokens"] - prev_t)
        per_step_sup.append(r["supervised_tokens"] - prev_s)
        prev_t, prev_s = r["tokens"], r["supervised_tokens"]
    return {"losses": [s["loss"] for s in steps], "ends": [s["t"] for s in steps],
            "tokens": per_step_tok, "supervised": per_step_sup}


def run_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from dianjing.models.adapters import linear_names

    torch.manual_seed(SEED)
    tok = AutoTokenizer.from_pretrained(spec["model_path"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # bf16: TRL's own way, fp32 weights under autocast (Trainer's bf16=True); the "TRL bf16" row
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=torch.float32, attn_implementation="sdpa")
    for p in model.parameters():
        p.requires_grad_(False)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0,
                                             target_modules=linear_names(model, exclude=model.get_output_embeddings())))
    # the same text dianjing's plain template renders: prompt "USER: …\nAI:", answer " …" + EOS
    ds = Dataset.from_list([{"prompt": f"USER: {e['user']}\nAI:", "completion": f" {e['assistant']}"}
                            for e in spec["examples"]])
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            marks.append(time.perf_counter())

    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **k):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    class Sequential(SFTTrainer):
        def _get_train_sampler(self, *a, **k):
            return SequentialSampler(self.train_dataset)

    args = SFTConfig(output_dir=str(Path(spec["tmp"]) / "trl"), per_device_train_batch_size=spec["batch_size"],
                     max_length=spec["max_length"], learning_rate=spec["lr"], max_steps=spec["steps"],
                     lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                     logging_steps=1, save_strategy="no", report_to=[], seed=SEED, use_cpu=True, bf16=spec["precision"] == "bf16",
                     fp16=False, completion_only_loss=True, packing=False, dataloader_num_workers=0,
                     optim="adamw_torch",
                     train_sampling_strategy="group_by_length" if spec["order"] == "grouped" else "random")
    trainer = (Sequential if spec["order"] == "file" else SFTTrainer)(
        model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock(), Losses()])
    # count the tokens of the batches TRL really trains on (one collator call per step:
    # no gradient accumulation, no dataloader workers)
    tokens: list[int] = []
    supervised: list[int] = []
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        tokens.append(sum(len(f["input_ids"]) for f in features))
        supervised.append(int((batch["labels"] != -100).sum()))
        return batch

    trainer.data_collator = counting
    trainer.train()
    tokens, supervised = tokens[:spec["steps"]], supervised[:spec["steps"]]
    ends = [m - marks[0] for m in marks[1:]]
    return {"losses": losses, "ends": ends, "tokens": tokens, "supervised": supervised}


def worker(side: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    res = run_dianjing(spec) if side == "dianjing" else run_trl(spec)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))


# ---------------------------------------------------------------------------- driver
def summarise(res: dict, flops_tok: float, flops_sup: float, peak: float) -> dict:
    # the first step is warm-up (allocator, kernels, and dianjing's torch.compile): throughput is over
    # the steps after it; the first step's own time is reported beside it
    t = res["ends"][-1] - res["ends"][0]
    tok, sup = sum(res["tokens"][1:]), sum(res["supervised"][1:])
    return {"tokens_per_s": tok / t, "supervised_per_s": sup / t, "s_per_step": t / (len(res["ends"]) - 1),
            "peak_rss_mb": res["peak_rss_mb"], "losses": res["losses"], "first_step_s": res["ends"][0],
            "mfu": (flops_tok * tok + flops_sup * sup) / t / (peak * 1e9)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m", help="model name/path (dianjing resolves GGUF and aliases)")
    ap.add_argument("--workload", choices=sorted(WORKLOADS), nargs="+", default=sorted(WORKLOADS))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--reps", type=int, default=1, help="alternating rounds per side")
    ap.add_argument("--order", choices=["file", "grouped"], default="file",
                    help="file: both sides see the same batches in file order and per-step losses are compared; "
                         "grouped: each side's own length-grouped batching (less padding), no loss comparison")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="fp32 on both sides (losses comparable to 1e-4), or bf16: dianjing's frozen bf16 weights "
                         "with fp32 LoRA vs TRL's bf16 autocast (losses comparable to 5e-2)")
    ap.add_argument("--dianjing-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra dianjing config for lever experiments, e.g. model.gradient_checkpointing=true")
    ap.add_argument("--sides", nargs="+", choices=["dianjing", "trl"], default=["dianjing", "trl"],
                    help="run only one side (lever experiments); ratios need both")
    ap.add_argument("--trl-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for TRL's worker only, e.g. THP_MEM_ALLOC_ENABLE=1 (the 2 MB pages dianjing "
                         "asks for by default, train.huge_pages): TRL as it runs with the same variable")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--write-data", metavar="DIR", type=Path,
                    help="write each workload's examples to DIR/WORKLOAD.jsonl (messages, the file dianjing's side "
                         "trains on) and stop, e.g. for bench/step_budget.py --data DIR/longprompt.jsonl "
                         "--template plain --set train.batching=sequential")
    ap.add_argument("--worker", nargs=2, metavar=("SIDE", "SPEC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    if args.steps < 2:
        ap.error("--steps must be at least 2: speed is timed from the end of the first step (it compiles)")

    import torch
    from transformers import AutoConfig, AutoTokenizer

    from dianjing.models.load import resolve_model
    from dianjing.peak import matmul_peak, recheck

    model_path = resolve_model(args.model, log=print)
    tok = AutoTokenizer.from_pretrained(model_path)
    if args.write_data:  # the examples alone: no peak, no model
        args.write_data.mkdir(parents=True, exist_ok=True)
        for workload in args.workload:
            examples = load_examples(workload, args.batch_size * args.steps, tok, args.max_length)
            print(f"{workload}: {len(examples)} examples -> {write_messages(args.write_data / f'{workload}.jsonl', examples)}")
        return None
    torch.set_num_threads(args.threads)
    # the honest peak: the best of the models' own F.linear shapes and a few squares, cached per machine
    cpu = torch.device("cpu")
    p32, p16 = matmul_peak(cpu, torch.float32), matmul_peak(cpu, torch.bfloat16)
    peak32, peak16 = p32.gflops, p16.gflops
    used = p16 if args.precision == "bf16" else p32
    used_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak = used.gflops
    tolerance = LOSS_TOLERANCE if args.precision == "fp32" else BF16_TOLERANCE
    print(f"matmul peak on this machine ({p16.device}, {args.threads} threads): fp32 {peak32:.0f} GFLOP/s at {p32.label} "
          f"({p32.family}), bf16 {peak16:.0f} GFLOP/s at {p16.label} ({p16.family}), tokens x in x out"
          f"{', from the cache' if used.cached else ''}; MFU below is against the {args.precision} peak")
    cfg = AutoConfig.from_pretrained(model_path)
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(cfg)
    head = meta.get_output_embeddings().weight.numel()
    tied = meta.get_output_embeddings().weight is meta.get_input_embeddings().weight
    # the input embedding is a lookup, not a matmul: it costs no FLOPs
    body = sum(p.numel() for p in meta.parameters()) - meta.get_input_embeddings().weight.numel() \
        - (0 if tied else head)
    flops_tok, flops_sup = 6 * body, 6 * head
    for workload in args.workload:
        examples = load_examples(workload, args.batch_size * args.steps, tok, args.max_length)
        if len(examples) < args.batch_size * args.steps:
            raise SystemExit(f"{workload}: only {len(examples)} examples fit in {args.max_length} tokens")
        with tempfile.TemporaryDirectory() as tmp:
            spec = {"model_path": model_path, "examples": examples, "steps": args.steps,
                    "batch_size": args.batch_size, "max_length": args.max_length, "lr": args.lr,
                    "threads": args.threads, "tmp": tmp, "dianjing_set": args.dianjing_set,
                    "precision": args.precision, "order": args.order}
            sp = Path(tmp) / "spec.json"
            sp.write_text(json.dumps(spec))
            results: dict[str, list] = {"dianjing": [], "trl": []}
            for rep in range(args.reps):
                for side in args.sides:
                    print(f"[{workload}] round {rep + 1}: {side} …", flush=True)
                    env = dict(os.environ)
                    if side == "trl":
                        env.update(kv.split("=", 1) for kv in args.trl_env)
                    p = subprocess.run([sys.executable, __file__, "--worker", side, str(sp)],
                                       capture_output=True, text=True, env=env)
                    line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
                    if p.returncode != 0 or not line:
                        print(p.stderr[-3000:])
                        raise SystemExit(f"{side} failed")
                    results[side].append(summarise(json.loads(line[-1][7:]), flops_tok, flops_sup, peak))
                    if args.reps > 1:  # every round, so the spread between identical rounds is on record
                        r = results[side][-1]
                        print(f"    {r['tokens_per_s']:.1f} tokens/s, {r['s_per_step']:.2f} s/step, "
                              f"peak {r['peak_rss_mb'] / 1024:.2f} GiB", flush=True)
        # a side that counted more than the cached peak says the peak is stale (a slow host's probe): measured again
        fastest = max(r["mfu"] for rs in results.values() for r in rs) * peak
        if fastest > peak:
            found, why = recheck(cpu, used_dtype, fastest)
            print(why)
            if found.gflops > peak:
                for rs in results.values():
                    for r in rs:
                        r["mfu"] *= peak / found.gflops
                peak = found.gflops
                peak32, peak16 = (peak, peak16) if args.precision == "fp32" else (peak32, peak)
        best = {s: max(r, key=lambda x: x["tokens_per_s"]) for s, r in results.items() if r}
        if len(best) == 1:
            (side, r), = best.items()
            print(f"{workload} {side}: {r['tokens_per_s']:.1f} tokens/s, {r['s_per_step']:.2f} s/step, "
                  f"peak {r['peak_rss_mb'] / 1024:.2f} GiB, MFU {100 * r['mfu']:.1f}%, first step {r['first_step_s']:.1f} s, "
                  f"losses {r['losses']}")
            continue
        d, t = best["dianjing"], best["trl"]
        # grouped: the sides train different batches per step, so their losses are not comparable
        diff = max(abs(a - b) for a, b in zip(d["losses"], t["losses"])) if args.order == "file" else None
        check = (f"max |loss diff| {diff:.2e} ({'within' if diff <= tolerance else 'OUTSIDE'} the "
                 f"{tolerance:g} tolerance)" if diff is not None else
                 "losses not compared (each side groups the examples into its own batches)")
        print(f"\n{workload} on {args.model}: {len(examples)} examples, batch {args.batch_size}, "
              f"max_length {args.max_length}, {args.steps} steps, LoRA r16/α32 all linear, {args.precision}, "
              f"{'file order' if args.order == 'file' else 'length-grouped batches'}; "
              f"TRL {__import__('trl').__version__} defaults otherwise (gradient checkpointing on)"
              f"{' with ' + ' '.join(args.trl_env) if args.trl_env else ''}; "
              f"dianjing defaults{' + ' + ' '.join(args.dianjing_set) if args.dianjing_set else ''}")
        print(f"{'':10} {'tokens/s':>9} {'sup tok/s':>9} {'s/step':>7} {'peak RSS':>9} {'MFU':>6} {'1st step':>8}  losses")
        for side, r in best.items():
            print(f"{side:10} {r['tokens_per_s']:9.1f} {r['supervised_per_s']:9.1f} {r['s_per_step']:7.2f} "
                  f"{r['peak_rss_mb'] / 1024:7.2f}Gi {100 * r['mfu']:5.1f}% {r['first_step_s']:7.1f}s  "
                  + " ".join(f"{l:.4f}" for l in r["losses"]))
        print(f"{'ratio':10} {d['tokens_per_s'] / t['tokens_per_s']:9.2f}x {'':9} {'':7} "
              f"{d['peak_rss_mb'] / t['peak_rss_mb']:8.2f}x  {check}")
        print(json.dumps({
            "workload": workload, "model": args.model, "steps": args.steps, "batch_size": args.batch_size,
            "precision": args.precision, "order": args.order,
            "dianjing_tokens_per_s": round(d["tokens_per_s"], 2), "trl_tokens_per_s": round(t["tokens_per_s"], 2),
            "ratio_tokens_per_s": round(d["tokens_per_s"] / t["tokens_per_s"], 3),
            "dianjing_supervised_per_s": round(d["supervised_per_s"], 2),
            "trl_supervised_per_s": round(t["supervised_per_s"], 2),
            "dianjing_peak_rss_mb": round(d["peak_rss_mb"]), "trl_peak_rss_mb": round(t["peak_rss_mb"]),
            "ratio_peak_rss": round(d["peak_rss_mb"] / t["peak_rss_mb"], 3),
            "mfu": round(d["mfu"], 4), "trl_mfu": round(t["mfu"], 4), "loss_max_abs_diff": diff,
            "dianjing_first_step_s": round(d["first_step_s"], 1), "trl_first_step_s": round(t["first_step_s"], 1),
            "dianjing_set": args.dianjing_set, "trl_env": args.trl_env, "dianjing_losses": d["losses"], "trl_losses": t["losses"],
            "peak_gflops_fp32": round(peak32, 1), "peak_gflops_bf16": round(peak16, 1),
            "peak_shape_bf16": p16.label, "peak_family": used.family}), flush=True)


if __name__ == "__main__":
    main()
