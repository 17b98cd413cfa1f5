"""One prepared check of dianjing on one GPU (issue 15), in under 8 minutes, printing JSON lines.

    bash bench/gpu_check.sh            # on the GPU machine: installs .gpu/whl into /tmp/site, then runs this
    python bench/gpu_check.py --smoke  # the same code paths on the CPU: tiny models, 2-3 steps

Model weights cannot be fetched on the GPU machine, so the models are the real architectures'
configs (Gemma 3 270M and Llama 3.2 1B, from the bundle that bench/gpu_bundle.sh makes) with
random weights, saved with their real tokenizers into a temporary folder; speed and memory do
not depend on the weights' values. The data is the alpaca workload of bench/sft_vs_trl.py
(copied into the bundle) and, for the default run, dianjing's bundled default data.

Each check runs in its own subprocess with its own timeout, under one total budget (--budget), so
that one failure or hang does not stop the rest; each prints one JSON line ("check": ...), and a
check that fails prints {"check": ..., "error": ..., "stderr_tail": ...}:

  env          versions, the device, its measured bf16 matmul peak (the MFU denominator), the models built
  default_run  `dianjing train` with the default data and adapter settings, model.device set, a fixed
               train.max_steps: tokens/s, peak device memory, MFU (from summary.json, and recomputed here)
  side         one line per training run of the comparison, per model: `dianjing` (its defaults:
               length-grouped batches), `trl_defaults` (SFTTrainer + PEFT LoRA on TRL's own defaults:
               packing with BFD, which is padding-free, its fused/chunked loss, gradient checkpointing,
               bf16 autocast), `dianjing_file` and `trl_same` (both in file order: the same batches, so
               their per-step losses must agree); same examples, LoRA r16/alpha32 on all linear layers,
               batch, max length, lr and steps on every side
  compare      per model: the ratios, and whether the issue's targets hold (>= 2x TRL's tokens/s at
               <= 0.7x its peak device memory; MFU >= 40% on the 1B config)
  serve        `dianjing serve --device ...` under 1 and 16 concurrent clients (bench/serve_load.py's levels)
  targets      everything the issue asks for, in one line

MFU counts FLOPs the way bench/sft_vs_trl.py does: 6 x (non-embedding parameters) per trained token
+ 6 x (output-layer parameters) per supervised token, over the measured bf16 matmul peak
(dianjing.peak.peak_gflops). Throughput is over the steps after the first (the first holds
torch.compile and allocator warm-up; its time is reported beside it).
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SEED = 42
MODELS = ("gemma-3-270m", "llama-3.2-1b")
# --smoke: the same architectures, 2 layers and a small hidden size (the real tokenizers, so the
# real vocabularies)
SMOKE_ARCH = {
    "gemma-3-270m": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 64,
                     "layer_types": ["sliding_attention", "full_attention"]},
    "llama-3.2-1b": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "head_dim": 16},
}
# sizes: on the GPU, chosen so that the whole script stays under 8 minutes on an H200 (it stops
# itself at --budget); --smoke: seconds per check on a 2-core CPU
GPU_SIZES = {"default_steps": 40, "steps": 30, "batch_size": 8, "max_length": 512, "lr": 2e-4,
             "serve_requests": 4, "serve_max_tokens": 64, "serve_clients": [1, 16], "budget": 450}
SMOKE_SIZES = {"default_steps": 2, "steps": 3, "batch_size": 2, "max_length": 128, "lr": 2e-4,
               "serve_requests": 1, "serve_max_tokens": 4, "serve_clients": [1, 16], "budget": 1500}
# per-check timeouts in seconds (GPU; --smoke multiplies them by 4); the total budget caps them all
# (a side's first dianjing process per architecture compiles its blocks cold: about a minute)
TIMEOUTS = {"prepare": 150, "default_run": 150, "serve": 100,
            "side:gemma-3-270m": 90, "side:llama-3.2-1b": 120}
SIDES = ("dianjing", "trl_defaults", "dianjing_file", "trl_same")
TARGET_SPEED, TARGET_MEMORY, TARGET_MFU = 2.0, 0.7, 0.40


# ============================================================================ workers (subprocesses)
def _torch_device(name: str):
    import torch

    return torch.device(name)


def _memory(dev) -> dict:
    import torch

    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return {"peak_device_memory_mb": None if peak is None else round(peak, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "tokenizers", "pydantic",
                 "fastapi", "uvicorn", "gguf", "safetensors", "huggingface_hub", "pyarrow", "pandas", "triton"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _peak_gflops(dev) -> tuple[float, str]:
    """The bf16 matmul peak of the device: dianjing's own measurement where it has one."""
    import torch

    try:
        from dianjing.peak import peak_gflops

        return peak_gflops(dev, torch.bfloat16), "dianjing.peak.peak_gflops"
    except ImportError:
        pass
    n = 8192 if dev.type == "cuda" else 1024
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    a @ b
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    start, reps = time.perf_counter(), 0
    while time.perf_counter() - start < 0.5:
        a @ b
        reps += 1
        sync()
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9, "gpu_check.py (one size)"


def _model_folder(name: str, bundle: Path, dest: Path, dev, smoke: bool) -> dict:
    """A random-weight model of `name`'s architecture with its real tokenizer, saved as an HF folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = bundle / "models" / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name == "tokenizer.json.xz":
            with lzma.open(f, "rb") as fin, open(dest / "tokenizer.json", "wb") as fout:
                shutil.copyfileobj(fin, fout)
        elif f.name != "config.json":
            shutil.copy(f, dest / f.name)
    cfg = json.loads((src / "config.json").read_text())
    if smoke:
        cfg.update(SMOKE_ARCH[name])
    tok = AutoTokenizer.from_pretrained(str(dest))
    widened = None
    if len(tok) > cfg["vocab_size"]:  # the bundle's fallback tokenizer is larger than the config's vocabulary
        widened = cfg["vocab_size"]
        cfg["vocab_size"] = len(tok)
    (dest / "config.json").write_text(json.dumps(cfg, indent=1))
    config = AutoConfig.from_pretrained(str(dest))
    torch.manual_seed(0)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(str(dest))
    head = model.get_output_embeddings().weight
    embed = model.get_input_embeddings().weight
    tied = head is embed
    total = sum(p.numel() for p in model.parameters())
    # the input embedding is a lookup, not a matmul: it costs no FLOPs (as in bench/sft_vs_trl.py)
    body = total - embed.numel() - (0 if tied else head.numel())
    info = {"path": str(dest), "architecture": type(model).__name__, "params": total, "body_params": body,
            "head_params": head.numel(), "tied": tied, "vocab_size": cfg["vocab_size"], "tokenizer_len": len(tok),
            "layers": cfg["num_hidden_layers"], "hidden": cfg["hidden_size"],
            "flops_per_token": 6 * body, "flops_per_supervised": 6 * head.numel()}
    if widened:
        info["vocab_widened_from"] = widened
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return info


def w_prepare(spec: dict) -> dict:
    """env + the random-weight model folders + the examples each model's sides train on."""
    import platform

    import torch

    sys.path.insert(0, str(BENCH))
    import sft_vs_trl

    dev = _torch_device(spec["device"])
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {spec['device']}: torch {torch.__version__} sees no GPU")
    import dianjing

    try:
        from dianjing.precision import device_name
        name = device_name(dev)
    except ImportError:
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
    peak, how = _peak_gflops(dev)
    sft_vs_trl.WORKLOADS["alpaca"] = Path(spec["bundle"]) / "data" / "instruct" / "alpaca_en_demo.json"
    models, n = {}, spec["batch_size"] * spec["steps"]
    for m in MODELS:
        info = _model_folder(m, Path(spec["bundle"]), Path(spec["work"]) / "models" / m, dev, spec["smoke"])
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(info["path"])
        examples = sft_vs_trl.load_examples("alpaca", n, tok, spec["max_length"])
        if len(examples) < n:
            raise SystemExit(f"{m}: only {len(examples)} alpaca examples fit in {spec['max_length']} tokens")
        path = Path(spec["work"]) / f"examples-{m}.json"
        path.write_text(json.dumps(examples))
        info["examples"] = str(path)
        models[m] = info
    return {"python": platform.python_version(), "versions": _versions(), "device": str(dev), "device_name": name,
            "cuda": torch.version.cuda, "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "peak_gflops_bf16": round(peak, 1), "peak_measured_by": how,
            "dianjing": str(Path(dianjing.__file__).parent), "models": models}


def w_dianjing(spec: dict) -> dict:
    """dianjing's side: bench/sft_vs_trl.py's run_dianjing (its Trainer, in this process) on the device."""
    import torch

    sys.path.insert(0, str(BENCH))
    import sft_vs_trl

    if spec["smoke"]:
        torch.set_num_threads(1)
    spec = {**spec, "examples": json.loads(Path(spec["examples"]).read_text())}
    res = sft_vs_trl.run_dianjing(spec)
    return {**res, **_memory(_torch_device(spec["device"]))}


def w_trl(spec: dict) -> dict:
    """TRL SFTTrainer + PEFT LoRA: `same` = bench/sft_vs_trl.py's settings (file order, no packing), or
    `defaults` = TRL's own defaults (packing with BFD, padding-free, its fused/chunked loss)."""
    import dataclasses

    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from dianjing.models.adapters import linear_names

    dev = _torch_device(spec["device"])
    if spec["smoke"]:
        torch.set_num_threads(1)
    examples = json.loads(Path(spec["examples"]).read_text())
    torch.manual_seed(SEED)
    tok = AutoTokenizer.from_pretrained(spec["model_path"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # the same text dianjing's plain template renders: prompt "USER: …\nAI:", answer " …" + EOS
    ds = Dataset.from_list([{"prompt": f"USER: {e['user']}\nAI:", "completion": f" {e['assistant']}"}
                            for e in examples])
    fields = {f.name: f for f in dataclasses.fields(SFTConfig)}
    kw = dict(output_dir=str(Path(spec["tmp"]) / "trl"), per_device_train_batch_size=spec["batch_size"],
              max_length=spec["max_length"], learning_rate=spec["lr"], max_steps=spec["steps"],
              lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1,
              save_strategy="no", report_to=[], seed=SEED, dataloader_num_workers=0)
    if dev.type == "cpu":
        kw["use_cpu"] = True
    settings: dict = {}
    if spec["mode"] == "same":
        # bench/sft_vs_trl.py's TRL side: fp32 weights under bf16 autocast, no packing, loss on the
        # completion, the batches in file order, the LoRA targets and init of dianjing's side
        kw.update(bf16=True, fp16=False, completion_only_loss=True, packing=False, optim="adamw_torch")
        model = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=torch.float32,
                                                     attn_implementation="sdpa")
        for p in model.parameters():
            p.requires_grad_(False)
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules=linear_names(model,
                                                                             exclude=model.get_output_embeddings())))
        peft_config = None
    else:
        # TRL's own defaults: the model by path (TRL loads it: fp32 weights, bf16 autocast by its
        # bf16 default), its own PEFT wrapping, gradient checkpointing (its default), and packing with
        # best-fit decreasing, which this version makes padding-free, where the version has them
        model = spec["model_path"]
        peft_config = LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0,
                                 target_modules="all-linear")
        if "packing" in fields:
            kw["packing"] = True
        if "packing_strategy" in fields:
            kw["packing_strategy"] = "bfd"
        elif "padding_free" in fields:
            kw["padding_free"] = True
        from trl.trainer import utils as trl_utils

        fused = hasattr(trl_utils, "add_fused_lm_head")  # TRL's default loss is the chunked one (1.x)
        choices = (fields["loss_type"].metadata or {}).get("choices", []) if "loss_type" in fields else []
        if not fused and "chunked_nll" in choices:
            kw["loss_type"] = "chunked_nll"
        settings["fused_lm_head"] = fused
        import importlib.util

        if not fused and "use_liger_kernel" in fields and importlib.util.find_spec("liger_kernel"):
            kw["use_liger_kernel"] = True
    marks: list[float] = []
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            sync()
            marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            sync()
            marks.append(time.perf_counter())

    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **k):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    class Sequential(SFTTrainer):
        def _get_train_sampler(self, *a, **k):
            return SequentialSampler(self.train_dataset)

    args = SFTConfig(**kw)
    cls = Sequential if spec["mode"] == "same" else SFTTrainer
    trainer = cls(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock(), Losses()],
                  **({"peft_config": peft_config} if peft_config is not None else {}))
    # count the tokens of the batches TRL really trains on (one collator call per step: no
    # gradient accumulation, no dataloader workers; padding-free batches hold no padding)
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
    cfg = trainer.model.config
    settings.update({k: getattr(args, k, None) for k in ("packing", "packing_strategy", "padding_free", "loss_type",
                                                          "bf16", "gradient_checkpointing", "optim",
                                                          "use_liger_kernel", "completion_only_loss")},
                    trainer_padding_free=getattr(trainer, "padding_free", None),
                    attn_implementation=getattr(cfg, "_attn_implementation", None),
                    weights_dtype=str(next(trainer.model.parameters()).dtype), trl=trl.__version__)
    n = spec["steps"]
    return {"losses": losses, "ends": [m - marks[0] for m in marks[1:]], "tokens": tokens[:n],
            "supervised": supervised[:n], "settings": settings, **_memory(dev)}


def w_serve(spec: dict) -> dict:
    """`dianjing serve` on the device; bench/serve_load.py's clients at each level."""
    import httpx

    sys.path.insert(0, str(BENCH))
    import serve_load

    from dianjing.cli import serve as serve_cli

    sub = argparse.ArgumentParser().add_subparsers()
    serve_cli.add_parser(sub)
    has_device = "--device" in sub.choices["serve"]._option_string_actions  # `dianjing serve --device` is new
    port = serve_load.free_port()
    cmd = [sys.executable, "-m", "dianjing.cli", "serve", spec["target"], "--host", "127.0.0.1", "--port", str(port),
           "--max-batch", "16", "--precision", "auto"]
    if has_device:
        cmd += ["--device", spec["device"]]
    if spec["smoke"]:
        cmd += ["--threads", "1"]
    log = Path(spec["tmp"]) / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "DIANJING_API_KEY"}
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with code {proc.returncode}; its log:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > spec["ready_s"]:
                raise SystemExit(f"the server was not up after {spec['ready_s']} s; its log:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        ready_s = time.monotonic() - t0
        model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        serve_load.run_level(url, model, 1, 1, spec["max_tokens"])  # warm-up, not counted
        levels = [serve_load.run_level(url, model, c, spec["requests"], spec["max_tokens"]) for c in spec["clients"]]
        health = httpx.get(url + "/health").json()
        gpu_mem = None
        if spec["device"].startswith("cuda") and shutil.which("nvidia-smi"):
            q = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=20)
            for line in q.stdout.splitlines():
                parts = [x.strip() for x in line.split(",")]
                if len(parts) == 2 and parts[0] == str(proc.pid) and parts[1].isdigit():
                    gpu_mem = int(parts[1])
    finally:
        serve_load.stop_server(proc)
    log_lines = [l for l in log.read_text(errors="replace").splitlines()
                 if l.strip() and "it/s]" not in l and "Loading weights" not in l]  # no progress bars
    return {"target": spec["target"], "model_id": model, "device_flag": has_device, "ready_s": round(ready_s, 1),
            "levels": levels, "health": {k: v for k, v in health.items() if not isinstance(v, (list, dict))},
            "server_gpu_memory_mb": gpu_mem, "server_log_head": log_lines[:6]}


WORKERS = {"prepare": w_prepare, "dianjing": w_dianjing, "trl": w_trl, "serve": w_serve}


def worker(kind: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    res = WORKERS[kind](spec)
    print("RESULT " + json.dumps(res), flush=True)


# ============================================================================ driver
class Driver:
    def __init__(self, args):
        self.args = args
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.out / "gpu_check.jsonl"
        self.jsonl.write_text("")
        self.logfile = self.out / "gpu_check.log"
        self.logfile.write_text("")
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "logs").mkdir(exist_ok=True)
        self.scale = 4 if args.smoke else 1
        self.failed: list[str] = []
        env = dict(os.environ)
        src = str(ROOT / "src")
        if src not in env.get("PYTHONPATH", "").split(os.pathsep):  # the working tree's dianjing first
            env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false", DIANJING_CACHE=str(self.work / "cache"),
                   HF_HOME=str(self.work / "hf"), HF_HUB_DISABLE_TELEMETRY="1", TRL_EXPERIMENTAL_SILENCE="1")
        if args.smoke:  # modest CPU use: one thread per process
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.env = env

    # ------------------------------------------------------------------ plumbing
    def emit(self, obj: dict) -> None:
        line = json.dumps(obj, separators=(",", ":"), default=str)
        print(line, flush=True)
        with self.jsonl.open("a") as f:
            f.write(line + "\n")

    def note(self, text: str) -> None:
        stamp = f"[{time.monotonic() - self.t0:6.1f}s] "
        if self.args.verbose:  # stdout stays JSON lines only; the log file has everything
            print(stamp + text, file=sys.stderr, flush=True)
        with self.logfile.open("a") as f:
            f.write(stamp + text + "\n")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def call(self, name: str, argv: list[str], timeout: float) -> tuple[object, str, str, float]:
        """Run argv in its own process group with a timeout: (returncode or 'timeout', stdout, stderr, wall s)."""
        safe = name.replace(":", "_").replace("/", "_")
        out_p, err_p = self.work / "logs" / f"{safe}.out", self.work / "logs" / f"{safe}.err"
        self.note(f"{name}: start, timeout {timeout:.0f} s: {' '.join(argv[1:4])} …")
        t = time.monotonic()
        with out_p.open("w") as fo, err_p.open("w") as fe:
            p = subprocess.Popen(argv, stdout=fo, stderr=fe, env=self.env, cwd=str(ROOT), start_new_session=True)
            try:
                rc: object = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)  # the whole group: a server the worker started too
                p.wait()
                rc = "timeout"
        wall = time.monotonic() - t
        try:  # whatever the worker left in its group (a server) goes with it
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        stdout, stderr = out_p.read_text(errors="replace"), err_p.read_text(errors="replace")
        with self.logfile.open("a") as f:
            f.write(f"\n===== {name}: rc {rc}, {wall:.1f} s =====\n--- stdout (tail)\n{stdout[-20000:]}\n"
                    f"--- stderr (tail)\n{stderr[-20000:]}\n")
        self.note(f"{name}: rc {rc} in {wall:.1f} s")
        return rc, stdout, stderr, wall

    def budget_for(self, key: str) -> float | None:
        """This check's timeout: its own, capped by what is left of the total budget; None: skip it."""
        own = TIMEOUTS[key] * self.scale
        left = self.left() - 3
        if left < (30 if self.args.smoke else 12):
            return None
        return min(own, left)

    def skipped(self, check: str, **extra) -> dict:
        self.failed.append(check)
        line = {"check": check, **extra, "error": f"skipped: {self.args.budget} s total budget spent"}
        self.emit(line)
        return line

    def failure(self, check: str, rc, stderr: str, wall: float, timeout: float, **extra) -> dict:
        self.failed.append(check)
        err = f"timed out after {timeout:.0f} s" if rc == "timeout" else f"exit code {rc}"
        line = {"check": check, **extra, "error": err, "wall_s": round(wall, 1), "stderr_tail": stderr[-1500:]}
        self.emit(line)
        return line

    def run_worker(self, check: str, key: str, kind: str, spec: dict, name: str, **extra) -> dict | None:
        timeout = self.budget_for(key)
        if timeout is None:
            self.skipped(check, **extra)
            return None
        tmp = self.work / "tmp" / name.replace(":", "_")
        tmp.mkdir(parents=True, exist_ok=True)
        spec = {**spec, "tmp": str(tmp), "smoke": self.args.smoke, "device": self.args.device}
        sp = tmp / "spec.json"
        sp.write_text(json.dumps(spec))
        rc, stdout, stderr, wall = self.call(name, [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
                                                    str(sp)], timeout)
        line = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
        if rc != 0 or not line:
            self.failure(check, rc, stderr or stdout, wall, timeout, **extra)
            return None
        res = json.loads(line[-1][7:])
        res["wall_s"] = round(wall, 1)
        return res

    # ------------------------------------------------------------------ checks
    def prepare(self) -> dict | None:
        a = self.args
        res = self.run_worker("env", "prepare", "prepare", {
            "bundle": str(Path(a.bundle).resolve()), "work": str(self.work), "batch_size": a.batch_size,
            "steps": a.steps, "max_length": a.max_length}, "prepare")
        if res is None:
            return None
        self.emit({"check": "env", "smoke": a.smoke, **{k: v for k, v in res.items() if k != "models"},
                   "models": {m: {k: v for k, v in i.items() if k not in ("path", "examples")}
                              for m, i in res["models"].items()},
                   "sizes": {k: getattr(a, k) for k in ("default_steps", "steps", "batch_size", "max_length", "lr",
                                                       "budget")}})
        return res

    def default_run(self, env: dict) -> dict | None:
        a = self.args
        timeout = self.budget_for("default_run")
        if timeout is None:
            return self.skipped("default_run")
        run_dir = self.work / "default-run"
        shutil.rmtree(run_dir, ignore_errors=True)  # a --work folder used before: dianjing refuses a finished run
        cfg = self.work / "default-run.yaml"
        lines = ["model:", f"  name: {env['models']['gemma-3-270m']['path']}", f"  device: {a.device}",
                 "train:", f"  max_steps: {a.default_steps}", f"  output_dir: {run_dir}"]
        if a.smoke:
            lines.append("  threads: 1")
        cfg.write_text("\n".join(lines) + "\n")
        rc, stdout, stderr, wall = self.call("default_run", [sys.executable, "-m", "dianjing.cli", "train", str(cfg)],
                                             timeout)
        summary_p = run_dir / "summary.json"
        if rc != 0 or not summary_p.exists():
            return self.failure("default_run", rc, stderr or stdout, wall, timeout)
        s = json.loads(summary_p.read_text())
        shutil.copy(summary_p, self.out / "default_run_summary.json")
        rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
        rows = [r for r in rows if "loss" in r]
        info, peak = env["models"]["gemma-3-270m"], env["peak_gflops_bf16"]
        steady = {}
        if len(rows) >= 2:
            t = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]
            tok = rows[-1]["tokens"] - rows[0]["tokens"]
            sup = rows[-1]["supervised_tokens"] - rows[0]["supervised_tokens"]
            steady = {"steady_tokens_per_s": round(tok / t, 1) if t > 0 else None,
                      "steady_mfu": round((info["flops_per_token"] * tok + info["flops_per_supervised"] * sup)
                                          / t / (peak * 1e9), 4) if t > 0 else None,
                      "first_step_s": rows[0]["elapsed_s"]}
        mfu_mine = (s["estimated_flops"] / s["wall_time_s"] / (peak * 1e9)
                    if s.get("estimated_flops") and s.get("wall_time_s") else None)
        line = {"check": "default_run", "model": "gemma-3-270m (random weights)", "data": "builtin:default",
                "steps": s.get("steps"), "tokens": s.get("tokens"), "supervised_tokens": s.get("supervised_tokens"),
                "train_time_s": s.get("wall_time_s"), "tokens_per_s": s.get("tokens_per_s"), **steady,
                "peak_device_memory_mb": s.get("peak_device_memory_mb"), "peak_rss_mb": s.get("peak_rss_mb"),
                "mfu": s.get("mfu"), "mfu_from_summary_flops": None if mfu_mine is None else round(mfu_mine, 4),
                "device": s.get("device"), "device_name": s.get("device_name"),
                "summary_keys_missing": [k for k in ("device", "device_name", "peak_device_memory_mb", "mfu")
                                         if k not in s],
                "final_eval_loss": s.get("final_eval_loss"), "process_wall_s": round(wall, 1), "run_dir": str(run_dir)}
        self.emit(line)
        return line

    def side(self, model: str, side: str, env: dict) -> dict | None:
        a, info = self.args, env["models"][model]
        spec = {"model_path": info["path"], "examples": info["examples"], "steps": a.steps, "batch_size": a.batch_size,
                "max_length": a.max_length, "lr": a.lr, "precision": "bf16", "threads": 1}
        if side.startswith("dianjing"):
            spec["order"] = "file" if side == "dianjing_file" else "grouped"
            spec["dianjing_set"] = [f"model.device={a.device}"]
            kind = "dianjing"
        else:
            spec["mode"] = "same" if side == "trl_same" else "defaults"
            kind = "trl"
        res = self.run_worker("side", f"side:{model}", kind, spec, f"{model}:{side}", model=model, side=side)
        if res is None:
            return None
        ends, toks, sups = res["ends"], res["tokens"], res["supervised"]
        if len(ends) < 2:
            return self.failure("side", 1, f"only {len(ends)} steps timed: {json.dumps(res)[:1000]}", res["wall_s"],
                                0, model=model, side=side)
        t = ends[-1] - ends[0]
        tok, sup = sum(toks[1:len(ends)]), sum(sups[1:len(ends)])
        mfu = (info["flops_per_token"] * tok + info["flops_per_supervised"] * sup) / t / (env["peak_gflops_bf16"] * 1e9)
        losses = [round(x, 4) for x in res["losses"]]
        line = {"check": "side", "model": model, "side": side, "steps": len(ends),
                "tokens_per_s": round(tok / t, 1), "supervised_per_s": round(sup / t, 1),
                "s_per_step": round(t / (len(ends) - 1), 4), "first_step_s": round(ends[0], 2),
                "tokens_per_step": round(tok / (len(ends) - 1)), "peak_device_memory_mb": res["peak_device_memory_mb"],
                "peak_rss_mb": res["peak_rss_mb"], "mfu": round(mfu, 4), "losses": losses,
                **({"settings": res["settings"]} if "settings" in res else {}), "wall_s": res["wall_s"]}
        shown = losses if len(losses) <= 6 else losses[:3] + ["…"] + losses[-2:]
        self.emit({k: v for k, v in line.items() if k != "losses"} | {"losses": shown})
        return line

    def compare(self, model: str, sides: dict) -> dict:
        mem_key = "peak_device_memory_mb" if self.args.device.startswith("cuda") else "peak_rss_mb"

        def ratio(a, b, key):
            if not (sides.get(a) and sides.get(b)) or not sides[b].get(key) or sides[a].get(key) is None:
                return None
            return round(sides[a][key] / sides[b][key], 3)

        line: dict = {"check": "compare", "model": model, "memory": mem_key}
        for side in SIDES:
            line[f"{side}_tokens_per_s"] = sides[side]["tokens_per_s"] if sides.get(side) else None
            line[f"{side}_{mem_key}"] = sides[side][mem_key] if sides.get(side) else None
        line.update({"speed_vs_trl_defaults": ratio("dianjing", "trl_defaults", "tokens_per_s"),
                     "memory_vs_trl_defaults": ratio("dianjing", "trl_defaults", mem_key),
                     "speed_vs_trl_same": ratio("dianjing", "trl_same", "tokens_per_s"),
                     "memory_vs_trl_same": ratio("dianjing", "trl_same", mem_key),
                     "file_order_speed_vs_trl_same": ratio("dianjing_file", "trl_same", "tokens_per_s"),
                     "mfu": sides["dianjing"]["mfu"] if sides.get("dianjing") else None,
                     "trl_defaults_mfu": sides["trl_defaults"]["mfu"] if sides.get("trl_defaults") else None})
        sys.path.insert(0, str(BENCH))
        from sft_vs_trl import BF16_TOLERANCE

        if sides.get("dianjing_file") and sides.get("trl_same"):
            d, t = sides["dianjing_file"]["losses"], sides["trl_same"]["losses"]
            diff = max((abs(x - y) for x, y in zip(d, t)), default=None)
            line.update(loss_max_abs_diff=None if diff is None else round(diff, 5), loss_tolerance=BF16_TOLERANCE,
                        losses_agree=None if diff is None else diff <= BF16_TOLERANCE)
        met = []
        for vs in ("trl_defaults", "trl_same"):
            sp, mem = line[f"speed_vs_{vs}"], line[f"memory_vs_{vs}"]
            ok = None if sp is None or mem is None else (sp >= TARGET_SPEED and mem <= TARGET_MEMORY)
            line[f"target_vs_{vs}"] = ok
            met.append(ok)
        if model == "llama-3.2-1b":
            line["target_mfu"] = None if line["mfu"] is None else line["mfu"] >= TARGET_MFU
            met.append(line["target_mfu"])
        line["targets_met"] = None if None in met else all(met)
        self.emit(line)
        return line

    def serve(self, env: dict, default: dict | None) -> dict | None:
        a = self.args
        run_dir = self.work / "default-run"
        target = str(run_dir) if (run_dir / "summary.json").exists() else env["models"]["gemma-3-270m"]["path"]
        res = self.run_worker("serve", "serve", "serve", {
            "target": target, "requests": a.serve_requests, "max_tokens": a.serve_max_tokens,
            "clients": a.serve_clients, "ready_s": 60 * self.scale}, "serve")
        if res is None:
            return None
        levels = res.pop("levels")
        one = next((l for l in levels if l["concurrency"] == 1), None)
        line = {"check": "serve", "served": "the default run's adapter on random Gemma 3 270M"
                if target == str(run_dir) else "random Gemma 3 270M (the default run left no run folder)", **res,
                "levels": [{k: l[k] for k in ("concurrency", "requests", "wall_s", "requests_per_s", "gen_tokens_per_s",
                                              "latency_p50_s", "latency_max_s", "rows_per_step")} for l in levels]}
        for l in levels:
            if one and l["concurrency"] != 1 and one["gen_tokens_per_s"]:
                line[f"speedup_{l['concurrency']}_vs_1"] = round(l["gen_tokens_per_s"] / one["gen_tokens_per_s"], 2)
        line.pop("target", None)
        self.emit(line)
        return line

    def main(self) -> int:
        a = self.args
        self.note(f"gpu_check: device {a.device}, smoke {a.smoke}, budget {a.budget} s, work {self.work}, "
                  f"out {self.out}")
        env = self.prepare()
        if env is None:
            self.emit({"check": "targets", "error": "no env: nothing else can run", "all_met": None})
            return 1
        default = self.default_run(env) if "default_run" in a.checks else None
        # the comparison first (dianjing's defaults vs TRL's defaults, both models), then serve,
        # then the file-order pair (the same batches: a loss check and a same-settings ratio), so
        # that what the budget cuts when the GPU is slower than planned is the least needed
        models = [m for m in MODELS if m in a.checks]
        sides: dict = {m: {} for m in models}
        for m in models:
            for side in ("dianjing", "trl_defaults"):
                if side in a.sides:
                    sides[m][side] = self.side(m, side, env)
        serve = self.serve(env, default) if "serve" in a.checks else None
        for m in models:
            for side in ("dianjing_file", "trl_same"):
                if side in a.sides:
                    sides[m][side] = self.side(m, side, env)
        compares = {m: self.compare(m, sides[m]) for m in models}
        g, l = compares.get("gemma-3-270m", {}), compares.get("llama-3.2-1b", {})
        keys = ("speed_vs_trl_defaults", "memory_vs_trl_defaults", "speed_vs_trl_same", "memory_vs_trl_same",
                "losses_agree", "targets_met")
        verdicts = [c.get("targets_met") for c in compares.values()]
        self.emit({"check": "targets", "smoke": a.smoke, "device": env["device"], "device_name": env["device_name"],
                   "targets": f">= {TARGET_SPEED}x TRL's tokens/s at <= {TARGET_MEMORY}x its peak device memory "
                              f"(vs TRL defaults and vs TRL same settings); MFU >= {TARGET_MFU:.0%} on the 1B config",
                   "gemma-3-270m": {k: g.get(k) for k in keys} if g else None,
                   "llama-3.2-1b": {**{k: l.get(k) for k in keys}, "mfu": l.get("mfu"),
                                    "target_mfu": l.get("target_mfu")} if l else None,
                   "default_run_tokens_per_s": default.get("tokens_per_s") if default else None,
                   "default_run_mfu": (default.get("mfu") or default.get("steady_mfu")) if default else None,
                   "serve_gen_tokens_per_s": {str(x["concurrency"]): x["gen_tokens_per_s"]
                                              for x in serve["levels"]} if serve and "levels" in serve else None,
                   "all_met": None if not verdicts or None in verdicts else all(verdicts),
                   "failed_checks": self.failed, "wall_s": round(time.monotonic() - self.t0, 1)})
        if not a.work and not a.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny models (2 layers) on the CPU, 2-3 steps: the plumbing")
    ap.add_argument("--device", help="default: cuda (cpu with --smoke)")
    ap.add_argument("--bundle", default=str(ROOT / ".gpu"), help="the folder bench/gpu_bundle.sh filled")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / ".gpu" / "out"),
                    help="where gpu_check.jsonl, gpu_check.log and default_run_summary.json go (default: $OUT)")
    ap.add_argument("--work", help="work folder (models, runs, logs); default: a temporary one, removed at the end")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES,
                    help="which training runs of the comparison (default: all four)")
    ap.add_argument("--verbose", "-v", action="store_true", help="progress on stderr (always in gpu_check.log)")
    ap.add_argument("--checks", nargs="+", default=["default_run", *MODELS, "serve"],
                    choices=["default_run", *MODELS, "serve"], help="which checks (env always runs)")
    for k in ("default_steps", "steps", "batch_size", "max_length", "serve_requests", "serve_max_tokens", "budget"):
        ap.add_argument("--" + k.replace("_", "-"), type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--serve-clients", type=int, nargs="+")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    sizes = SMOKE_SIZES if args.smoke else GPU_SIZES
    for k, v in sizes.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    if not (Path(args.bundle) / "models").is_dir():
        sys.exit(f"no bundle at {args.bundle}: run `bash bench/gpu_bundle.sh` first (docs/gpu.md)")
    return Driver(args).main()


if __name__ == "__main__":
    sys.exit(main())
