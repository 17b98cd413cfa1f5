"""attach(model, adapter_cfg) on the tiny causal LM: for every adapter.method the right parameters train,
the base is frozen (except for full fine-tuning), a forward and a backward pass work, and a bad
adapter.target_modules is a ConfigError."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from dianjing.config import AdapterConfig, load_config
from dianjing.errors import ConfigError
from dianjing.models.adapters import attach

LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
IDS = torch.tensor([[5, 6, 7, 8, 9]])
# what each method trains: a marker in the trainable parameters' names, and how many per linear layer
TRAINS = {"lora": ("lora_", 2), "dora": ("lora_", 3), "ia3": ("ia3_l", 1)}


@pytest.fixture
def base(tiny_llama):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval()


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _module(name: str) -> str:
    """'base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight' -> 'q_proj'"""
    parts = name.split(".")
    return next(p for p in reversed(parts) if p in LINEARS | {"lm_head", "embed_tokens"})


def _forward_backward(model, n_virtual: int = 0):
    logits = model(input_ids=IDS).logits
    assert logits.shape == (1, IDS.shape[1] + n_virtual, model.config.vocab_size)
    assert torch.isfinite(logits).all()
    logits.float().logsumexp(-1).mean().backward()
    # gradients reach exactly the trainable parameters, and nothing frozen gets one
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == _trainable(model)
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if p.grad is not None
               and "lora_A" not in n)  # LoRA's A has no gradient at init (B is zero); B and the rest do
    return logits


@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_peft_adapters_train_only_themselves_on_every_linear_layer(base, method):
    with torch.no_grad():
        want = base(input_ids=IDS).logits
    n_tensors, n_base = len(list(base.parameters())), sum(p.numel() for p in base.parameters())
    model = attach(base, AdapterConfig(method=method, r=4))
    marker, per_layer = TRAINS[method]
    trainable = _trainable(model)
    assert trainable and all(marker in n for n in trainable)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert len(frozen) == n_tensors  # every base tensor, and nothing else
    assert sum(p.numel() for n, p in model.named_parameters() if n in frozen) == n_base
    # all-linear: each projection of each block, not the output layer or the embeddings
    adapted = {_module(n) for n in trainable}
    assert adapted == LINEARS
    assert len(trainable) == per_layer * len(LINEARS) * base.config.num_hidden_layers
    if method != "ia3":
        a = next(p for n, p in model.named_parameters() if "q_proj.lora_A" in n)
        assert a.shape[0] == 4  # adapter.r
    with torch.no_grad():  # an adapter starts as the identity: the model's outputs are unchanged
        torch.testing.assert_close(model(input_ids=IDS).logits, want, rtol=1e-5, atol=1e-5)
    _forward_backward(model)


def test_lora_on_named_target_modules_only(base):
    model = attach(base, AdapterConfig(method="lora", r=2, target_modules=["q_proj", "v_proj"]))
    assert {_module(n) for n in _trainable(model)} == {"q_proj", "v_proj"}
    _forward_backward(model)


def test_prompt_tuning_trains_only_the_virtual_tokens(base):
    with torch.no_grad():
        want = base(input_ids=IDS).logits
    model = attach(base, AdapterConfig(method="prompt_tuning", num_virtual_tokens=3))
    (name,) = _trainable(model)
    assert "prompt_encoder" in name
    (emb,) = [p for p in model.parameters() if p.requires_grad]
    assert emb.shape == (3, base.config.hidden_size)
    logits = _forward_backward(model, n_virtual=3)
    assert not torch.allclose(logits[:, 3:].detach(), want)  # the virtual tokens are read by the model


def test_full_trains_every_base_parameter(base):
    for p in base.parameters():  # even a model that arrived frozen
        p.requires_grad_(False)
    model = attach(base, AdapterConfig(method="full"))
    assert model is base
    assert _trainable(model) == {n for n, _ in base.named_parameters()}
    assert not any("lora_" in n for n in _trainable(model))
    _forward_backward(model)


def test_unknown_target_module_is_a_config_error(base):
    with pytest.raises(ConfigError) as e:
        attach(base, AdapterConfig(method="lora", target_modules=["no_such_proj"]))
    msg = str(e.value)
    assert msg.startswith("adapter.target_modules") and "no_such_proj" in msg and "all-linear" in msg


def test_dotted_target_names_match_module_paths(base):
    model = attach(base, AdapterConfig(method="lora", target_modules=["self_attn.q_proj"]))
    assert any("q_proj.lora_A" in n for n, _ in model.named_parameters())


def test_one_unknown_target_module_among_known_ones_is_an_error(base):
    """PEFT fails only when no target matches: a misspelt name next to a valid one was silently ignored."""
    with pytest.raises(ConfigError, match=r"adapter\.target_modules: 'no_such_proj' not in the model") as e:
        attach(base, AdapterConfig(method="lora", target_modules=["q_proj", "no_such_proj"]))
    assert "q_proj" in str(e.value)  # the fix lists the names there are


def test_no_target_modules_is_a_config_error_naming_the_key(base):
    with pytest.raises(ConfigError, match=r"adapter\.target_modules"):
        attach(base, AdapterConfig(method="lora", target_modules=[]))


def test_unknown_method_is_refused_by_the_config():
    with pytest.raises(ConfigError, match=r"adapter\.method"):
        load_config(None, ["adapter.method=qlora"])


# -- adapter.method auto ------------------------------------------------------------------------------
def test_auto_is_the_specialist_default_and_chooses_full_on_a_small_backbone(tmp_path):
    from dianjing.models.adapters import FULL_LR, checkpoint_params, resolve_auto
    from tests.tiny import build_bert

    bert = build_bert(tmp_path / "bert")
    n = checkpoint_params(str(bert))
    assert n is not None and 0 < n < 10e6  # the tiny BERT, counted from its safetensors header
    for task in ("classify", "pair", "tag"):
        cfg = load_config(None, [f"task.type={task}"])
        assert cfg.adapter.method == "auto"  # filled by TASK_DEFAULTS
        method, why = resolve_auto(cfg, str(bert))
        assert method == "full" and cfg.train.lr == FULL_LR and "full fine-tuning" in why and "train.lr" in why
    cfg = load_config(None, ["task.type=classify", "train.lr=3e-3"])
    assert resolve_auto(cfg, str(bert))[0] == "full" and cfg.train.lr == 3e-3  # the user's lr wins
    assert load_config(None, ["task.type=classify", "adapter.method=lora"]).adapter.method == "lora"
    assert load_config(None, ["task.type=extract-qa"]).adapter.method == "lora"  # not measured better there


def test_auto_keeps_lora_above_the_threshold_for_sft_and_without_safetensors(tmp_path, monkeypatch):
    from dianjing.models import adapters
    from tests.tiny import build_bert

    bert = build_bert(tmp_path / "bert")
    monkeypatch.setattr(adapters, "FULL_BELOW", 1000)  # the tiny BERT now counts as large
    cfg = load_config(None, ["task.type=classify"])
    method, why = adapters.resolve_auto(cfg, str(bert))
    assert method == "lora" and cfg.train.lr == 2e-4 and "or more" in why
    monkeypatch.undo()
    sft = load_config(None, ["adapter.method=auto"])
    assert adapters.resolve_auto(sft, str(bert))[0] == "lora"
    empty = tmp_path / "no-weights"
    empty.mkdir()
    method, why = adapters.resolve_auto(load_config(None, ["task.type=tag"]), str(empty))
    assert method == "lora" and "no safetensors" in why
