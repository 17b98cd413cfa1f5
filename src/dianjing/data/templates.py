"""Chat templates: the model's own (tokenizer.chat_template) or a built-in one.

Built-ins are Jinja strings in the same dialect as Hugging Face chat templates, so a
single renderer serves both, and `export` can write the template a run was trained
with into the exported tokenizer for other engines to use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dianjing.errors import ConfigError

NL = "{{ '\\n' }}"
BOS = "{% if add_bos and bos_token %}{{ bos_token }}{% endif %}"

BUILTIN_TEMPLATES: dict[str, str] = {
    # The lecture's plain format: "USER: … AI: …" and an end token after each answer.
    "plain": (
        BOS
        + "{% for m in messages %}"
        + "{% if m.role == 'system' %}{{ m.content }}" + NL + NL
        + "{% elif m.role == 'user' %}USER: {{ m.content }}" + NL
        + "{% else %}AI: {{ m.content }}{{ eos_token }}" + NL
        + "{% endif %}{% endfor %}"
        + "{% if add_generation_prompt %}AI:{% endif %}"
    ),
    "chatml": (
        BOS
        + "{% for m in messages %}<|im_start|>{{ m.role }}" + NL + "{{ m.content }}<|im_end|>" + NL
        + "{% endfor %}"
        + "{% if add_generation_prompt %}<|im_start|>assistant" + NL + "{% endif %}"
    ),
    "vicuna": (
        BOS
        + "{% if messages[0].role == 'system' %}{{ messages[0].content }}"
        + "{% else %}A chat between a curious user and an artificial intelligence assistant. "
        + "The assistant gives helpful, detailed, and polite answers to the user's questions.{% endif %}"
        + "{% for m in messages %}"
        + "{% if m.role == 'user' %} USER: {{ m.content }}"
        + "{% elif m.role == 'assistant' %} ASSISTANT: {{ m.content }}{{ eos_token }}{% endif %}"
        + "{% endfor %}"
        + "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
    ),
    "alpaca": (
        BOS
        + "{% if messages[0].role == 'system' %}{{ messages[0].content }}"
        + "{% else %}Below is an instruction that describes a task. "
        + "Write a response that appropriately completes the request.{% endif %}"
        + NL + NL
        + "{% for m in messages %}"
        + "{% if m.role == 'user' %}### Instruction:" + NL + "{{ m.content }}" + NL + NL
        + "{% elif m.role == 'assistant' %}### Response:" + NL + "{{ m.content }}{{ eos_token }}" + NL + NL
        + "{% endif %}{% endfor %}"
        + "{% if add_generation_prompt %}### Response:" + NL + "{% endif %}"
    ),
}

# Text that ends an assistant turn in each built-in, besides the tokenizer's EOS id.
BUILTIN_STOPS = {"plain": ["\nUSER:"], "chatml": ["<|im_end|>"], "vicuna": [" USER:"],
                 "alpaca": ["### Instruction:"]}


def _raise(msg: str):
    raise jinja2.exceptions.TemplateError(msg)


@dataclass
class ChatTemplate:
    """A Jinja chat template plus the tokens it is rendered with."""

    name: str  # "model" or a built-in name
    source: str
    bos_token: str | None
    eos_token: str | None
    add_bos: bool
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._compiled = env.from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise ConfigError(f"chat template '{self.name}' is not valid Jinja: {e}") from None

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self._compiled.render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "", add_bos=self.add_bos,
        )

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source, "bos_token": self.bos_token,
                "eos_token": self.eos_token, "add_bos": self.add_bos,
                "stop_strings": list(self.stop_strings)}

    @classmethod
    def from_json(cls, d: dict) -> "ChatTemplate":
        return cls(d["name"], d["source"], d.get("bos_token"), d.get("eos_token"), d.get("add_bos", False),
                   tuple(d.get("stop_strings", ())))


def tokenizer_adds_bos(tokenizer) -> bool:
    """Does the tokenizer put BOS in front of plain text? (Gemma, Llama do; GPT-2 style don't.)"""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def choose_template(name: str, tokenizer) -> tuple[ChatTemplate, str]:
    """Pick the template for a tokenizer; returns it and a sentence saying what was chosen."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # some tokenizers carry several named templates
        own = own.get("default") or next(iter(own.values()), None)
    add_bos = tokenizer_adds_bos(tokenizer)
    common = dict(bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
    if name in ("auto", "model") and own:
        # The model's template decides about BOS itself (most write {{ bos_token }}).
        return (ChatTemplate("model", own, add_bos=False, **common),
                "template: the model's own chat template")
    if name == "model":
        raise ConfigError("data.template is 'model' but the tokenizer has no chat template",
                          fix=f"set data.template to one of {', '.join(BUILTIN_TEMPLATES)}")
    if name == "auto":
        name, why = "plain", "template: plain 'USER: … AI: …' (the tokenizer has no chat template)"
    elif name in BUILTIN_TEMPLATES:
        why = f"template: built-in '{name}'"
    else:
        raise ConfigError(f"data.template: unknown template '{name}'",
                          fix=f"use auto, model, or one of {', '.join(BUILTIN_TEMPLATES)}")
    if tokenizer.eos_token is None:
        raise ConfigError("the tokenizer has no EOS token, so answers cannot be ended",
                          fix="use a tokenizer with an eos_token, or data.template=chatml")
    return (ChatTemplate(name, BUILTIN_TEMPLATES[name], add_bos=add_bos,
                         stop_strings=tuple(BUILTIN_STOPS[name]), **common), why)
