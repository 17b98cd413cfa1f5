"""The chat SFT route's builder: instruction data → conversations → ids + answer mask; a causal
LM with an adapter (or fully fine-tuned), the fused sparse loss, compiled blocks where it helps."""

from __future__ import annotations

from dianjing.data.batching import collate, collate_packed
from dianjing.data.diagnose import diagnose
from dianjing.data.load import load_conversations, split_eval
from dianjing.data.render import RenderStats, render_all
from dianjing.data.templates import choose_template
from dianjing.errors import ConfigError, DianjingError
from dianjing.models.adapters import attach, count_params
from dianjing.models.fused_lora import fold as fold_lora
from dianjing.models.load import enable_checkpointing, load_model, random_model, uncheck_blocks
from dianjing.run_folder import RunFolder
from dianjing.train.compile import budget_unused, compile_blocks
from dianjing.train.compile import decide as compile_decide
from dianjing.train.loss import SFTLoss
from dianjing.train.setup import Context, Setup, base_summary, trainable


def build(ctx: Context) -> Setup:
    cfg, log = ctx.cfg, ctx.log
    if cfg.model.random_init and cfg.adapter.method != "full":
        # the run folder keeps only the adapter, and eval/chat/export would put it on the pre-trained base
        raise ConfigError(f"model.random_init with adapter.method: {cfg.adapter.method}: the random frozen weights "
                          "would be saved nowhere (a chat run folder keeps only the adapter, and loading it puts the "
                          "adapter on the pre-trained model), and an adapter over random frozen weights learns little",
                          fix="set adapter.method=full for a from-scratch baseline")
    if cfg.train.batching == "packed" and cfg.adapter.method == "prompt_tuning":
        raise ConfigError("train.batching: packed cannot be used with prompt tuning: its virtual tokens would "
                          "come before the first example of a row only", fix="use train.batching: length_grouped")
    template, why = choose_template(cfg.data.template, ctx.tokenizer, cfg.data.template_kwargs)
    log(why)
    log(diagnose(template, cfg.data.loss_on, cfg.data.reasoning, cfg.data.system_prompt).text())
    train_set, eval_set, stats, load_report = _data(ctx, template)
    pad_id = ctx.tokenizer.pad_token_id
    tokenizer_files = release_tokenizer(ctx)
    model, total = causal_lm(ctx, random_init=cfg.model.random_init)
    loss_fn = SFTLoss(model, cfg.train.logits, log=log)
    log(loss_fn.describe())
    compiled = prepare(ctx, model)
    head_w = loss_fn.head.weight.numel() if loss_fn.head is not None else 0
    flops_per_token, flops_per_target = 6 * (total - head_w), 6 * head_w

    save = saver(ctx, model, template, tokenizer_files)

    def summarize(state: dict) -> dict:
        flops = flops_per_token * state["tokens"] + flops_per_target * state["supervised_tokens"]
        return {**base_summary(state, flops), "data": stats.summary(), "skipped_records": dict(load_report.skipped),
                "files": load_report.files, "logits": loss_fn.mode}

    return Setup(model=model, param_groups=trainable(model), train_set=train_set, eval_set=eval_set,
                 collate=(lambda exs: collate_packed(exs, pad_id)) if cfg.train.batching == "packed"
                 else (lambda exs: collate(exs, pad_id)), loss=loss_fn,
                 count_targets=lambda b: int(b["mask"][:, 1:].sum()),
                 flops_per_token=flops_per_token, flops_per_target=flops_per_target, save=save, summarize=summarize,
                 info={"base_model": ctx.model_path, "model_name": cfg.model.name, "method": cfg.adapter.method,
                       "dtype": str(ctx.precision.dtype).split(".")[-1],
                       **({"random_init": True} if cfg.model.random_init else {})},
                 compiled=compiled)


def _data(ctx: Context, template):
    """Files → conversations → rendered examples (ids + answer mask), with what was dropped and why."""
    cfg, log = ctx.cfg, ctx.log
    convs, load_report = load_conversations(cfg.data, log=log)
    if cfg.data.eval_files:
        eval_convs, _ = load_conversations(cfg.data.model_copy(update={"files": cfg.data.eval_files,
                                                                       "max_examples": None}), log=log,
                                           key="data.eval_files")
        train_convs = convs
    else:
        train_convs, eval_convs = split_eval(convs, cfg.data.eval_fraction, cfg.train.seed)
    stats = RenderStats()
    train_set = render_all(train_convs, ctx.tokenizer, template, cfg.data.max_length, cfg.data.loss_on, stats,
                           cfg.data.reasoning)
    eval_set = render_all(eval_convs, ctx.tokenizer, template, cfg.data.max_length, cfg.data.loss_on,
                          reasoning=cfg.data.reasoning)
    if not train_set:
        raise DianjingError("no training example has a supervised token left",
                            fix="raise data.max_length; `dianjing validate` shows the examples")
    log(f"data: {stats.kept} training examples ({stats.tokens} tokens, {stats.supervised_tokens} supervised), "
        f"{len(eval_set)} held out; truncated {stats.truncated}; dropped {sum(stats.dropped.values())}"
        + "".join(f"\n  dropped {n}: {why}" for why, n in stats.dropped.items())
        + "".join(f"\n  not trained, in {n} turns: {why}" for why, n in stats.not_trained.items())
        + "".join(f"\n  skipped {n} records: {why}" for why, n in load_report.skipped.items()))
    return train_set, eval_set, stats, load_report


def prepare(ctx: Context, model) -> bool:
    """After the loss's check (so that its no-grad forward is not what gets compiled): bf16 inputs for
    the adapted layers under autocast, and the blocks compiled where it helps (pinned). Returns compiled."""
    cfg = ctx.cfg
    if ctx.precision.autocast_dtype is not None and cfg.adapter.method != "full":
        _keep_bf16_inputs(model)
        if cfg.adapter.fold and cfg.adapter.method == "lora":
            n = fold_lora(model)
            ctx.log(f"adapter: {n} LoRA layers folded into their frozen layer's product (adapter.fold)")
    compiled, why = compile_decide(cfg.train.compile, model, ctx.precision.device)
    ctx.log(why)
    if cfg.model.attn_implementation == "auto":
        attn = written_out_attention(model, compiled, ctx.precision.device, cfg.data.max_length, ctx.log)
        ctx.pin(cfg.model, "attn_implementation", attn)
    budget = cfg.model.activation_budget
    if compiled:
        if budget is not None:
            selective_checkpointing(model, budget, cfg.model.gradient_checkpointing, ctx.log)
        compile_blocks(model, budget)
    elif budget is not None:
        ctx.log(budget_unused(why, cfg.model.gradient_checkpointing))
    ctx.pin(cfg.train, "compile", "on" if compiled else "off")
    return compiled


def selective_checkpointing(model, budget: float, whole_blocks: bool, log) -> None:
    """model.activation_budget on compiled blocks: whole-block checkpointing off, the compiler's own within
    the budget (compile_blocks sets it)."""
    n = uncheck_blocks(model) if whole_blocks else 0
    if whole_blocks and not n:
        log("gradient checkpointing: whole blocks (this model's blocks cannot turn it off one by one), inside "
            f"them the compiler keeps {budget:g} of the activations (model.activation_budget)")
        return
    log(f"gradient checkpointing: selective, by the compiler: each of the {n or 'compiled'} blocks keeps "
        f"{budget:g} of the activations it would keep without checkpointing, those costing the most FLOPs "
        "to recompute, and recomputes the rest (model.activation_budget)")


def load_attention(setting: str) -> str:
    """The attention a model is loaded with: `auto` loads with SDPA (`prepare` may switch it)."""
    return "sdpa" if setting == "auto" else setting


WRITTEN_OUT_MAX_LENGTH = 1024  # its [batch, heads, L, L] scores are kept for backward: measured up to 512


def written_out_attention(model, compiled: bool, device, max_length: int, log) -> str:
    """model.attn_implementation auto, once the compile is decided: written-out attention where the
    blocks are compiled on a CPU and rows are at most WRITTEN_OUT_MAX_LENGTH tokens, SDPA elsewhere
    (longer rows: the scores it keeps for the backward grow as L²). Written out is dianjing's own
    (`dianjing.models.attention`) where the model's eager attention is the plain computation it
    replaces, else the model's eager code. Returns the choice.

    PyTorch's CPU flash kernel ran Gemma 3's attention (4 heads of 256, L ≤ 512) at a fraction of the
    matmul speed; written out (QKᵀ, mask, softmax, ·V) inside a compiled block, inductor fuses the
    mask and softmax, and the two products run as batched GEMMs: 145 → 79 ms forward and backward at
    L 512 (bench/attention.py), and 6–32% more tokens/s for the whole step (bench/sft_vs_trl.py,
    2026-12-02, an AMD EPYC without AMX). dianjing's own skips the model's copies of K and V per query
    head and the fp32 probabilities its softmax keeps (docs/benchmarks.md, 2026-12-04)."""
    from dianjing.models import attention

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    now = getattr(base.config, "_attn_implementation", "sdpa")
    if not (compiled and device.type == "cpu") or now != "sdpa" or max_length > WRITTEN_OUT_MAX_LENGTH:
        return now
    choice = attention.register() if attention.fits(base) else "eager"
    try:
        base.set_attn_implementation(choice)
    except (ValueError, AttributeError, ImportError) as e:  # a model without eager attention keeps SDPA
        log(f"attention: sdpa (model.attn_implementation auto; {choice} is not available: {e})")
        return now
    what = ("dianjing's written-out attention" if choice == attention.NAME
            else "the model's eager attention, written out")
    log(f"attention: {choice}, {what} inside the compiled blocks (model.attn_implementation auto: faster than "
        "SDPA's CPU kernel here; sdpa to keep it)")
    return choice


def release_tokenizer(ctx: Context) -> dict[str, bytes]:
    """The tokenizer's files, kept as bytes for the run folder, and the tokenizer itself let go.

    Once the data is rendered, a chat run needs its tokenizer only to write it into the run folder,
    and a large vocabulary costs memory for the whole run: Gemma 3's tokenizer (262k tokens) holds
    320 MB resident for a 33 MB tokenizer.json (measured, transformers 5). Its files are kept
    instead, and the freed heap is handed back to the OS."""
    import tempfile
    from pathlib import Path

    from dianjing.train.memory import return_freed_memory

    with tempfile.TemporaryDirectory(prefix="dianjing-tokenizer-") as tmp:
        ctx.tokenizer.save_pretrained(tmp)
        files = {f.name: f.read_bytes() for f in Path(tmp).iterdir() if f.is_file()}
    ctx.tokenizer = None
    import gc

    gc.collect()
    return_freed_memory()
    return files


def saver(ctx: Context, model, template, tokenizer_files: dict[str, bytes] | None = None):
    """The Setup's save for a causal LM: the adapter (or whole model), the tokenizer (its files, when
    the route let the tokenizer go: `release_tokenizer`) and the template."""
    cfg = ctx.cfg

    def save(run: RunFolder, state_dict: dict | None = None) -> None:
        if cfg.adapter.method == "full":
            model.save_pretrained(str(run.model), state_dict=state_dict, safe_serialization=True)
        else:
            model.save_pretrained(str(run.adapter), state_dict=state_dict)
        if tokenizer_files is None:
            ctx.tokenizer.save_pretrained(str(run.tokenizer))
        else:
            run.tokenizer.mkdir(parents=True, exist_ok=True)
            for name, data in tokenizer_files.items():
                (run.tokenizer / name).write_bytes(data)
        run.write_template(template)

    return save


def causal_lm(ctx: Context, random_init: bool = False):
    """The base model in the run's precision, gradient checkpointing, the adapter (fp32 weights).
    `random_init`: the same architecture with fresh random weights (seeded by train.seed), the
    from-scratch baseline."""
    cfg, prec = ctx.cfg, ctx.precision
    full = cfg.adapter.method == "full"
    dtype = prec.load_dtype(trains_base=full)
    if random_init:
        ctx.log(f"model.random_init: the architecture of {ctx.model_path} with fresh random weights (seed "
                f"{cfg.train.seed}), none of its trained ones. Instruction tuning normally starts from pre-trained "
                "weights: this is a from-scratch baseline, to show what pre-training buys")
        base = random_model(ctx.model_path, dtype, cfg.model.trust_remote_code,
                            load_attention(cfg.model.attn_implementation))
    else:
        base = load_model(ctx.model_path, dtype, cfg.model.trust_remote_code,
                          load_attention(cfg.model.attn_implementation),
                          log=ctx.log)
    base.config.use_cache = False
    if cfg.model.gradient_checkpointing:
        if unchecked := enable_checkpointing(base, cfg.model.unchecked_blocks):
            ctx.log(f"gradient checkpointing: on, except in the last {unchecked} blocks (model.unchecked_blocks)")
        if hasattr(base, "enable_input_require_grads"):
            base.enable_input_require_grads()
    if not full:
        for p in base.parameters():
            p.requires_grad_(False)
    model = attach(base, cfg.adapter)
    for p in model.parameters():  # adapters train in fp32 whatever the base dtype
        if p.requires_grad and p.dtype != prec.trained and not full:
            p.data = p.data.to(prec.trained)
    model.to(prec.device)
    model.train()
    trainable_n, total = count_params(model)
    ctx.log(f"model: {ctx.model_path} ({total / 1e6:.1f}M parameters, {str(prec.dtype).split('.')[-1]}), "
            f"{cfg.adapter.method}: {trainable_n / 1e6:.2f}M trainable ({100 * trainable_n / total:.2f}%)")
    return model, total


def _keep_bf16_inputs(model) -> None:
    """PEFT casts every adapted layer's input to the adapter's dtype (fp32): a copy of each
    activation and fp32 products; instead keep the bf16 input and let autocast run the rank-r
    products in bf16 over the fp32 weights (forward, checkpoint recompute, backward)."""
    for m in model.modules():
        if hasattr(m, "cast_input_dtype_enabled"):
            m.cast_input_dtype_enabled = False
