"""Training end to end on tiny random models: the loss goes down, only adapters change,
save → load gives the same logits, resume equals an uninterrupted run, export and chat work."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from dianjing.train import loop
from dianjing.train.loop import resume, train
from tests.helpers import logged_losses, run_cli, sft_config


def test_lora_lowers_loss_and_changes_only_adapter(tiny_llama, alpaca_file, tmp_path):
    cfg = sft_config(tiny_llama, alpaca_file, tmp_path / "run", "train.epochs=6")
    run_dir, summary = train(cfg, log=lambda *_: None)
    losses = logged_losses(run_dir)
    assert len(losses) == summary["steps"] == 36
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    # run folder contents
    for f in ("config.yaml", "metrics.jsonl", "summary.json", "adapter/adapter_config.json",
              "adapter/adapter_model.safetensors", "tokenizer/tokenizer.json", "template.json"):
        assert (run_dir / f).exists(), f
    rec = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert {"step", "epoch", "loss", "lr", "tokens", "supervised_tokens", "tokens_per_s", "elapsed_s"} <= set(rec)
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["supervised_tokens"] > 0 and s["estimated_flops"] > 0 and s["peak_rss_mb"] > 0
    assert s["final_eval_loss"] is not None
    # only adapter weights changed: base weights in the saved adapter? none; base unchanged on reload
    adapter = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at 0: it learned


def test_only_adapter_parameters_change_during_training(tiny_llama, alpaca_file, tmp_path):
    cfg = sft_config(tiny_llama, alpaca_file, tmp_path / "run", "train.max_steps=3")
    trainer = loop.Trainer(cfg, tmp_path / "run", log=lambda *_: None)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.run()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert {n for n in changed if "lora_B" in n}  # every kind of adapter weight moved


def test_full_finetuning_changes_base_weights(tiny_gemma, alpaca_file, tmp_path):
    cfg = sft_config(tiny_gemma, alpaca_file, tmp_path / "run", "train.max_steps=2", "adapter.method=full")
    trainer = loop.Trainer(cfg, tmp_path / "run", log=lambda *_: None)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.run()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert "model.embed_tokens.weight" in changed and len(changed) == len(before)
    losses = logged_losses(tmp_path / "run")
    assert losses[-1] < losses[0]


def test_random_init_sft_trains_fresh_weights_of_the_same_architecture(tiny_gemma, alpaca_file, tmp_path):
    from dianjing.infer.load import load_run
    from transformers import AutoModelForCausalLM

    pretrained = AutoModelForCausalLM.from_pretrained(str(tiny_gemma)).state_dict()
    lines = []
    cfg = sft_config(tiny_gemma, alpaca_file, tmp_path / "run", "train.epochs=3", "adapter.method=full",
                     "model.random_init=true")
    trainer = loop.Trainer(cfg, tmp_path / "run", log=lines.append)
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    # the same architecture: every tensor has its pre-trained name and shape, none of its values
    assert {n: tuple(p.shape) for n, p in start.items()} == {n: tuple(pretrained[n].shape) for n in start}
    matrices = [n for n, p in start.items() if p.dim() >= 2]
    assert matrices and all(not torch.equal(start[n], pretrained[n]) for n in matrices)
    assert any("from-scratch baseline" in line and "pre-trained weights" in line for line in lines)
    trainer.save_outputs(trainer.run())
    losses = logged_losses(tmp_path / "run")
    assert losses[-1] < 0.7 * losses[0]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["random_init"] is True
    # what eval and chat load is the trained from-scratch model, not the pre-trained one
    model, _, _ = load_run(tmp_path / "run", precision="fp32", log=lambda *_: None)
    trained = dict(model.named_parameters())
    assert all(not torch.equal(trained[n].float(), start[n].float()) for n in matrices)
    assert all(not torch.equal(trained[n].float(), pretrained[n]) for n in matrices)


def test_random_init_sft_with_an_adapter_is_refused(tiny_llama, alpaca_file, tmp_path):
    from dianjing.errors import ConfigError

    cfg = sft_config(tiny_llama, alpaca_file, tmp_path / "run", "model.random_init=true", "adapter.method=lora")
    with pytest.raises(ConfigError, match=r"(?s)model.random_init with adapter.method: lora.*fix: set "
                                          r"adapter.method=full"):
        train(cfg, log=lambda *_: None)


@pytest.mark.parametrize("method", ["dora", "ia3", "prompt_tuning"])
def test_other_peft_methods_train(tiny_llama, alpaca_file, tmp_path, method):
    run_dir, summary = train(sft_config(tiny_llama, alpaca_file, tmp_path / "run", "train.max_steps=2",
                                        f"adapter.method={method}"), log=lambda *_: None)
    assert summary["steps"] == 2 and (run_dir / "adapter" / "adapter_config.json").exists()
    assert summary["logits"] == ("dense" if method == "prompt_tuning" else "sparse")


def test_save_load_gives_identical_logits(tiny_llama, alpaca_file, tmp_path):
    from dianjing.infer.load import load_run

    cfg = sft_config(tiny_llama, alpaca_file, tmp_path / "run", "train.max_steps=3", "model.precision=fp32")
    trainer = loop.Trainer(cfg, tmp_path / "run", log=lambda *_: None)
    trainer.save_outputs(trainer.run())
    trainer.model.eval()
    ids = torch.tensor([trainer.train_set[0].input_ids])
    with torch.no_grad():
        want = trainer.model(input_ids=ids).logits
        for merge in (False, True):
            model, _, _ = load_run(tmp_path / "run", precision="fp32", merge=merge, log=lambda *_: None)
            torch.testing.assert_close(model(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)


def test_resume_equals_uninterrupted(tiny_llama, alpaca_file, tmp_path, monkeypatch):
    extra = ("train.max_steps=8", "train.save_every=3", "adapter.dropout=0.1", "train.grad_accum=2",
             "train.batch_size=2")
    run_a, _ = train(sft_config(tiny_llama, alpaca_file, tmp_path / "a", *extra), log=lambda *_: None)

    real = loop.Trainer.micro_batch

    def crash_at_step_5(self, k):
        if k == 5 * 2:  # the first micro-batch of step 6: after the step-3 checkpoint... and past it
            raise KeyboardInterrupt
        return real(self, k)

    monkeypatch.setattr(loop.Trainer, "micro_batch", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(sft_config(tiny_llama, alpaca_file, tmp_path / "b", *extra), log=lambda *_: None)
    monkeypatch.setattr(loop.Trainer, "micro_batch", real)
    assert len(logged_losses(tmp_path / "b")) == 5  # steps 4 and 5 ran but were not checkpointed
    said = []
    run_b, _ = resume(tmp_path / "b", log=said.append)
    assert any("resumed from step-00000003" in s for s in said)
    assert logged_losses(run_b) == logged_losses(run_a)
    a = load_file(str(run_a / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run_b / "adapter" / "adapter_model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_corrupt_checkpoint_is_skipped(tiny_llama, alpaca_file, tmp_path):
    from dianjing.train.checkpoint import latest_checkpoint, list_checkpoints

    train(sft_config(tiny_llama, alpaca_file, tmp_path / "r", "train.max_steps=4", "train.save_every=2",
                     "train.keep_last_n=3"), log=lambda *_: None)
    ckpts = list_checkpoints(tmp_path / "r" / "checkpoints")
    assert [c.name for c in ckpts] == ["step-00000002", "step-00000004"]
    with open(ckpts[-1] / "trainable.safetensors", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\0\1\2\3")
    said = []
    assert latest_checkpoint(tmp_path / "r" / "checkpoints", log=said.append) == ckpts[0]
    assert "checksum" in said[0]


def test_no_pad_no_template_model_trains(tiny_nopad, alpaca_file, tmp_path):
    said = []
    cfg = sft_config(tiny_nopad, alpaca_file, tmp_path / "run", "train.max_steps=2")
    run_dir, summary = train(cfg, log=said.append)
    text = "\n".join(said)
    assert "no pad token" in text and "plain" in text
    assert json.loads((run_dir / "template.json").read_text())["name"] == "plain"


def test_cli_train_chat_export(tiny_llama, alpaca_file, tmp_path):
    from transformers import AutoTokenizer

    run_dir = tmp_path / "run"
    r = run_cli("train", "--model", tiny_llama, "--data", alpaca_file, "-o", run_dir, "--set", "train.max_steps=3",
                "--set", "train.batch_size=4")
    assert r.returncode == 0, r.stderr
    assert f"dianjing chat {run_dir}" in r.stderr
    r = run_cli("chat", run_dir, "--prompt", "Say the number 3.", "--temperature", "0", "--max-new-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()  # a random tiny model answers something; the point is it answers
    out = tmp_path / "exported"
    r = run_cli("export", run_dir, "--out", out, "--dtype", "fp32")
    assert r.returncode == 0, r.stderr
    # the exported folder loads in plain transformers, no PEFT, and gives the run's logits
    code = ("import sys,torch;from transformers import AutoModelForCausalLM as M;"
            f"m=M.from_pretrained(r'{out}');"
            "assert 'peft' not in sys.modules;"
            "print(m(input_ids=torch.tensor([[5,6,7]])).logits.sum().item())")
    r2 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r2.returncode == 0, r2.stderr
    from dianjing.infer.load import load_run

    model, _, _ = load_run(run_dir, precision="fp32", log=lambda *_: None)
    want = model(input_ids=torch.tensor([[5, 6, 7]])).logits.sum().item()
    assert abs(float(r2.stdout.strip()) - want) < 1e-3 * max(1, abs(want))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert "USER:" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                              add_generation_prompt=True)


def test_cli_errors_are_one_line_not_tracebacks(tmp_path):
    r = run_cli("train", "--set", "train.learnig_rate=1")
    assert r.returncode == 2 and "unknown key 'train.learnig_rate'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("validate", "--model", tmp_path / "nope")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("--help")
    assert all(c in r.stdout for c in ("train", "validate", "chat", "export"))


def test_bf16_adapter_compute_matches_fp32_compute(tiny_llama, alpaca_file, tmp_path):
    """adapter.compute=bf16 keeps the bf16 input of each adapted layer (no fp32 copy) and runs the
    rank-r products in bf16, by PEFT's layers (adapter.fold=false) or folded into the frozen product
    (the default); the fp32 adapter weights and the losses stay as with fp32 compute."""
    seen, losses = {}, {}
    for arm, compute, fold in (("fp32", "fp32", "true"), ("bf16", "bf16", "false"), ("fold", "bf16", "true")):
        cfg = sft_config(tiny_llama, alpaca_file, tmp_path / arm, "train.max_steps=4", "model.precision=bf16",
                         f"adapter.compute={compute}", f"adapter.fold={fold}")
        trainer = loop.Trainer(cfg, tmp_path / arm, log=lambda *_: None)
        name, layer = next((n, m) for n, m in trainer.model.named_modules() if hasattr(m, "lora_A"))
        # the folded layer never calls its lora_A module: watch the layer's own input there
        watched = layer if arm == "fold" else layer.lora_A["default"]
        assert ("forward" in vars(layer)) == (arm == "fold"), name
        watched.register_forward_hook(lambda m, inp, out, c=arm: [seen.setdefault(c, inp[0].dtype), None][1])
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.run()
        losses[arm] = logged_losses(tmp_path / arm)
        changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
        assert changed and all("lora_" in n for n in changed)
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters() if p.requires_grad)
    assert seen == {"fp32": torch.float32, "bf16": torch.bfloat16, "fold": torch.bfloat16}
    for arm in ("bf16", "fold"):
        assert max(abs(a - b) for a, b in zip(losses["fp32"], losses[arm])) < 2e-2, arm


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(tiny_llama, alpaca_file, tmp_path):
    """train.compile=on (inductor, ~1 min of compiling on 2 cores) gives the eager run's losses, changes
    only the adapter, saves the same adapter names, and evaluates without a second compile."""
    from torch._dynamo.utils import counters

    losses, keys = {}, {}
    for mode in ("off", "on"):
        out = tmp_path / mode
        cfg = sft_config(tiny_llama, alpaca_file, out, "train.max_steps=4", "model.precision=fp32",
                         f"train.compile={mode}", "train.eval_every=2")
        trainer = loop.Trainer(cfg, out, log=lambda *_: None)
        assert trainer.compiled is (mode == "on")
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        counters["stats"].clear()
        state = trainer.run()
        # blocks really ran compiled (a block that fails to compile would silently run eagerly)
        assert (counters["stats"]["unique_graphs"] > 0) is (mode == "on")
        trainer.save_outputs(state)
        losses[mode] = logged_losses(out)
        changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
        assert changed and all("lora_" in n for n in changed)
        keys[mode] = set(load_file(out / "adapter" / "adapter_model.safetensors"))
        assert "eval_loss" in (out / "metrics.jsonl").read_text()
    assert keys["on"] == keys["off"]
    assert max(abs(a - b) for a, b in zip(losses["off"], losses["on"])) < 1e-4, losses


def test_packed_batches_train_like_padded_ones(tiny_gemma, alpaca_file, tmp_path):
    """train.batching: packed computes the same batches without padding: the same per-step losses."""
    common = ("train.max_steps=4", "model.precision=fp32", "train.compile=off", "data.eval_fraction=0.1")
    grouped, _ = train(sft_config(tiny_gemma, alpaca_file, tmp_path / "grouped", *common), log=lambda *_: None)
    packed, summary = train(sft_config(tiny_gemma, alpaca_file, tmp_path / "packed", *common,
                                       "train.batching=packed"), log=lambda *_: None)
    want, got = logged_losses(grouped), logged_losses(packed)
    assert len(got) == len(want) == 4
    assert got == pytest.approx(want, rel=1e-5)
    # both count real tokens only (padding is never counted)
    assert summary["tokens"] == json.loads((grouped / "summary.json").read_text())["tokens"]


def test_the_chat_route_lets_the_tokenizer_go_and_still_saves_it(tiny_llama, alpaca_file, tmp_path, monkeypatch):
    """Once the data is rendered, the tokenizer (320 MB resident for Gemma 3's) is let go: nothing keeps it
    alive through training, and the run folder still gets its files, byte for byte."""
    import gc
    import weakref

    from dianjing.models import load as model_load
    from transformers import AutoTokenizer

    made = []
    real = model_load.load_tokenizer

    def spy(*a, **k):
        tok = real(*a, **k)
        made.append(weakref.ref(tok))
        return tok

    monkeypatch.setattr(loop, "load_tokenizer", spy)
    cfg = sft_config(tiny_llama, alpaca_file, tmp_path / "run", "train.max_steps=2")
    trainer = loop.Trainer(cfg, tmp_path / "run", log=lambda *_: None)
    gc.collect()
    assert len(made) == 1 and made[0]() is None, "the tokenizer is still alive after the route's build"
    trainer.save_outputs(trainer.run(resume=False))
    want = tmp_path / "want"
    AutoTokenizer.from_pretrained(str(tiny_llama)).save_pretrained(str(want))
    got = tmp_path / "run" / "tokenizer"
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in want.iterdir())
    for p in want.iterdir():
        assert (got / p.name).read_bytes() == p.read_bytes(), p.name
    saved = AutoTokenizer.from_pretrained(str(got))
    assert saved("Hello world")["input_ids"] == AutoTokenizer.from_pretrained(str(tiny_llama))("Hello world")["input_ids"]


def test_split_padded_batches_train_like_whole_ones(tiny_gemma, tmp_path, monkeypatch):
    """train.split_padding: a file-order batch with one long example runs as length-sorted parts —
    fewer padded tokens, the same per-step losses and the same tokens counted."""
    from dianjing.data import batching

    rows = [{"instruction": f"Say the number {i}.", "input": "",
             "output": " ".join(["word"] * (60 if i % 4 == 0 else 2)) + f" {i}."} for i in range(16)]
    data = tmp_path / "uneven.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parts = []
    real = batching.split_padded
    monkeypatch.setattr(loop, "split_padded", lambda b, s: parts.append(len(out := real(b, s))) or out)
    common = ("train.max_steps=3", "model.precision=fp32", "train.compile=off", "data.eval_fraction=0.25",
              "train.batching=sequential")
    whole, _ = train(sft_config(tiny_gemma, data, tmp_path / "whole", *common, "train.split_padding=null"),
                     log=lambda *_: None)
    assert parts == []  # null: never called
    split, summary = train(sft_config(tiny_gemma, data, tmp_path / "split", *common), log=lambda *_: None)
    assert parts and max(parts) >= 2  # the long examples went into parts of their own
    assert len(parts) > 3  # 3 steps of one batch each, then the held-out batches went through it too
    assert logged_losses(split) == pytest.approx(logged_losses(whole), rel=1e-5)
    before = json.loads((whole / "summary.json").read_text())
    assert summary["tokens"] == before["tokens"]
    assert summary["final_eval_loss"] == pytest.approx(before["final_eval_loss"], rel=1e-5)  # evaluated in parts too
