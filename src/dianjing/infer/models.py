"""The models `dianjing serve` holds: one base model in memory with the adapters of several runs on
it (PEFT named adapters), and the names requests pick them by. `ModelSet.activate` switches
adapters; the batcher calls it from its worker thread before each forward pass."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dianjing.data.templates import ChatTemplate, choose_template
from dianjing.errors import DianjingError
from dianjing.infer.generate import eos_ids
from dianjing.infer.load import is_run, load_run
from dianjing.models.adapters import peft_quiet
from dianjing.models.load import load_model, load_tokenizer, resolve_model
from dianjing.precision import for_inference
from dianjing.run_folder import CHAT_ADAPTER, CHAT_FULL, NOT_A_RUN, RunFolder

BASE = "base"
ADAPTER_METHODS = ("lora", "dora", "ia3")  # adapters PEFT can hold side by side and switch per batch


@dataclass
class Served:
    """A name a request can ask for: an adapter on the base model (or the base itself)."""

    name: str
    adapter: str | None  # PEFT adapter name; None = the model's own weights
    tokenizer: object
    template: ChatTemplate
    eos: set[int]


class ModelSet:
    """One model in memory and the names it answers to; `activate` switches adapters."""

    def __init__(self, model, served: list[Served]):
        self.model, self.served = model, {s.name: s for s in served}
        self.peft = any(s.adapter for s in served)
        self._active: str | None = None
        cfg = getattr(model, "config", None)
        self.context_length = int(getattr(cfg, "max_position_embeddings", None) or 1 << 20)
        self.pad_id = served[0].tokenizer.pad_token_id

    def activate(self, name: str) -> None:
        """Make the next forward pass use `name`'s adapter (called by the worker thread only)."""
        if name == self._active:
            return
        adapter = self.served[name].adapter
        if self.peft:
            if adapter is None:
                self.model.base_model.disable_adapter_layers()
            else:
                self.model.base_model.enable_adapter_layers()
                self.model.set_adapter(adapter, inference_mode=True)
        self._active = name


def _served(name: str, adapter: str | None, model, tok, template: ChatTemplate) -> Served:
    return Served(name, adapter, tok, template, eos_ids(model, tok, template))


def load_models(targets: list[str], precision: str = "auto", log: Callable[[str], None] = print,
                device: str = "auto") -> ModelSet:
    """Load run folders that share a base model (as named adapters), or one bare model / full run, onto
    `device` (auto | cpu | cuda | cuda:N | mps; resolved first, so a missing GPU fails before any loading)."""
    prec = for_inference(precision, device)
    runs = [Path(t) for t in targets if is_run(t)]
    bare = [t for t in targets if not is_run(t)]
    if not runs:
        if len(bare) > 1:
            raise DianjingError(f"serve takes one bare model, got {len(bare)}: {', '.join(bare)}",
                                fix="start one server per model (each with its own --port)")
        model, tok, template = load_run(bare[0], precision, log=log, command="dianjing serve", device=device)
        return ModelSet(model, [_served(BASE, None, model, tok, template)])
    names = [p.resolve().name for p in runs]
    if len(set(names)) < len(names) or BASE in names:
        raise DianjingError(f"requests pick a run by its folder name, and these clash: {', '.join(names)}",
                            fix=f"rename the run folders so each name is unique and none is '{BASE}'")
    folders = {p: RunFolder(p) for p in runs}
    infos = {p: folders[p].info() for p in runs}
    for p, info in infos.items():
        if info["method"] == "full" and len(targets) > 1:
            raise DianjingError(f"{p} is a full fine-tune with its own weights, so it cannot share a base "
                                "model with other runs", fix=f"serve it alone: dianjing serve {p}")
        if info["method"] not in (*ADAPTER_METHODS, "full"):
            raise DianjingError(f"{p} has a {info['method']} adapter; serve supports {', '.join(ADAPTER_METHODS)} "
                                "adapters and full fine-tunes", fix=f"talk to it with: dianjing chat {p}")
    if infos[runs[0]]["method"] == "full":
        model, tok, template = load_run(runs[0], precision, log=log, command="dianjing serve", device=device)
        return ModelSet(model, [_served(names[0], None, model, tok, template)])
    bases = {info["base_model"] for info in infos.values()}
    if len(bases) > 1:
        raise DianjingError("the runs were trained on different base models: "
                            + "; ".join(f"{p.name}: {i['base_model']}" for p, i in infos.items()),
                            fix="serve the runs of each base model in their own server (each with its own --port)")
    base_path = bases.pop()
    for b in bare:
        if (bare_run := RunFolder(b)).kind() != NOT_A_RUN:  # a specialist or unfinished run: say what fits it
            bare_run.require(CHAT_ADAPTER, CHAT_FULL, command="dianjing serve")
        if Path(resolve_model(b, log=log)).resolve() != Path(base_path).resolve():
            raise DianjingError(f"{b} is not the base model of the runs ({base_path})",
                                fix="leave it out: the runs' base model is served as 'base' anyway")
    kinds = {json.loads((folders[p].adapter / "adapter_config.json").read_text())["peft_type"] for p in runs}
    if len(kinds) > 1:
        raise DianjingError(f"the runs use different adapter types ({', '.join(sorted(kinds))}); one server "
                            "holds adapters of one type", fix="serve each type in its own server")
    from peft import PeftModel

    model = load_model(base_path, prec.frozen, log=log)
    served = []
    for i, (p, name) in enumerate(zip(runs, names)):
        adapter = f"adapter_{i}"  # PEFT adapter names become module keys: no dots allowed, so not `name`
        with peft_quiet():
            if i == 0:
                model = PeftModel.from_pretrained(model, str(folders[p].adapter), adapter_name=adapter)
            else:
                model.load_adapter(str(folders[p].adapter), adapter_name=adapter)
        tok = load_tokenizer(str(folders[p].tokenizer), log=lambda *_: None)
        template = folders[p].template()
        served.append(_served(name, adapter, model, tok, template))
        log(f"serving {name} ({infos[p]['method']} adapter from {p})")
    tok = load_tokenizer(base_path, log=lambda *_: None)
    template, why = choose_template("auto", tok)
    log(f"serving {BASE} ({base_path}); {why}")
    served.append(_served(BASE, None, model, tok, template))
    model.to(prec.device).eval()  # the base and every adapter on it
    return ModelSet(model, served)
