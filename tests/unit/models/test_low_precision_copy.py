"""A GGUF file's converted folder holds fp32 weights; a bf16 run loads a bf16 copy written beside it
once, with the very values a bf16 load of the fp32 file gives, instead of mapping twice the bytes."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from dianjing.models import load
from tests.tiny import build_model


def converted(tmp_path, kind="gemma3"):
    """A folder shaped like convert_gguf's output: fp32 weights and its COMPLETE marker."""
    folder = build_model(tmp_path / "conv", kind=kind)
    assert load._stored_dtypes(folder) == {"F32"}
    (folder / "COMPLETE").write_text("/somewhere/model.gguf")
    return folder


@pytest.mark.parametrize("kind", ["gemma3", "llama"])
def test_bf16_load_reads_a_bf16_copy_with_the_same_values(tmp_path, kind):
    folder = converted(tmp_path, kind)
    said = []
    model = load.load_model(str(folder), torch.bfloat16, log=said.append)
    copy = folder / "bf16"
    assert (copy / "COMPLETE").is_file() and load._stored_dtypes(copy) == {"BF16"}
    assert json.loads((copy / "config.json").read_text())["dtype"] == "bfloat16"
    assert len(said) == 1 and "bf16 copy" in said[0] and str(copy) in said[0]
    direct = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16)
    ours, theirs = model.state_dict(), direct.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k].dtype == torch.bfloat16 and torch.equal(ours[k], theirs[k]), k
    # the model still names the folder it was asked for (PEFT writes it into adapter_config.json)
    assert model.config._name_or_path == str(folder)
    assert not list(folder.glob(".bf16.tmp-*"))


def test_the_copy_is_written_once_and_then_reused(tmp_path, monkeypatch):
    folder = converted(tmp_path)
    load.load_model(str(folder), torch.bfloat16, log=lambda *_: None)
    import safetensors.torch

    def boom(*a, **k):
        raise AssertionError("wrote the copy a second time")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    said = []
    model = load.load_model(str(folder), torch.bfloat16, log=said.append)
    assert said == [] and next(model.parameters()).dtype == torch.bfloat16


def test_fp32_loads_and_other_folders_are_left_as_they_are(tmp_path):
    folder = converted(tmp_path)
    assert load.low_precision_copy(str(folder), torch.float32) == str(folder)
    model = load.load_model(str(folder), torch.float32, log=lambda *_: None)
    assert next(model.parameters()).dtype == torch.float32 and not (folder / "bf16").exists()
    user = build_model(tmp_path / "user")  # no COMPLETE: somebody's own folder, never written into
    assert load.low_precision_copy(str(user), torch.bfloat16) == str(user)
    load.load_model(str(user), torch.bfloat16, log=lambda *_: None)
    assert sorted(p.name for p in user.iterdir()) == sorted(p.name for p in (tmp_path / "user").iterdir())
    assert not (user / "bf16").exists()


def test_a_folder_already_in_low_precision_is_not_copied(tmp_path):
    folder = converted(tmp_path)
    AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16).save_pretrained(str(folder))
    assert load._stored_dtypes(folder) == {"BF16"}
    assert load.low_precision_copy(str(folder), torch.bfloat16) == str(folder)
    assert not (folder / "bf16").exists()


def test_a_failed_copy_leaves_nothing_and_the_error_shows(tmp_path, monkeypatch):
    folder = converted(tmp_path)
    import safetensors.torch

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        load.low_precision_copy(str(folder), torch.bfloat16, log=lambda *_: None)
    assert not (folder / "bf16").exists() and not list(folder.glob(".bf16.tmp-*"))


def test_a_copy_without_its_marker_is_replaced(tmp_path):
    folder = converted(tmp_path)
    (folder / "bf16").mkdir()
    (folder / "bf16" / "model.safetensors").write_bytes(b"half written")
    got = load.low_precision_copy(str(folder), torch.bfloat16, log=lambda *_: None)
    assert got == str(folder / "bf16") and load._stored_dtypes(folder / "bf16") == {"BF16"}
