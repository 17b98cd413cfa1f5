"""Chat templates: the model's own (tokenizer.chat_template) or a built-in one.

Built-ins are Jinja strings in the same dialect as Hugging Face chat templates, so a
single renderer serves both, and `export` can write the template a run was trained
with into the exported tokenizer for other engines to use.

Two things travel with a template into the run folder (template.json), so that chat and serve
render exactly as training did: its options (`data.template_kwargs`, e.g. Qwen3's
`enable_thinking`), passed to every render as template variables, and its environment, which
understands the `{% generation %}…{% endgeneration %}` markers of templates written for TRL's
assistant-only loss (SmolLM3's): rendered plainly, or, for data/locate.py, with the marked text
between two marker characters.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import jinja2
from jinja2 import meta, nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dianjing.data.tools import JINJA_CALLS, JINJA_TOOLS_BLOCK
from dianjing.errors import ConfigError

NL = "{{ '\\n' }}"
BOS = "{% if add_bos and bos_token %}{{ bos_token }}{% endif %}"
FIRST_IS_SYSTEM = "messages and messages[0].role == 'system'"

BUILTIN_TEMPLATES: dict[str, str] = {
    # The lecture's plain format: "USER: … AI: …" and an end token after each answer. With tools
    # (the built-in tool format, data/tools.py): the tool list first, as the system text, calls in
    # the AI line, results on "TOOL: …" lines.
    "plain": (
        BOS
        + "{% if tools %}{% if " + FIRST_IS_SYSTEM + " %}{{ messages[0].content }}" + NL + NL + "{% endif %}"
        + JINJA_TOOLS_BLOCK + NL + NL + "{% endif %}"
        + "{% for m in messages %}"
        + "{% if m.role == 'system' %}{% if not (tools and loop.first) %}{{ m.content }}" + NL + NL
        + "{% endif %}"
        + "{% elif m.role == 'user' %}USER: {{ m.content }}" + NL
        + "{% elif m.role == 'tool' %}TOOL: {{ m.content }}" + NL
        + "{% else %}AI: {% if m.tool_calls %}" + JINJA_CALLS + "{% else %}{{ m.content }}{% endif %}"
        + "{{ eos_token }}" + NL
        + "{% endif %}{% endfor %}"
        + "{% if add_generation_prompt %}AI:{% endif %}"
    ),
    # With tools: a system turn listing them (after the system text), calls in the assistant turn,
    # results in 'tool' turns.
    "chatml": (
        BOS
        + "{% if tools %}<|im_start|>system" + NL + "{% if " + FIRST_IS_SYSTEM + " %}{{ messages[0].content }}"
        + NL + NL + "{% endif %}" + JINJA_TOOLS_BLOCK + "<|im_end|>" + NL + "{% endif %}"
        + "{% for m in messages %}"
        + "{% if m.role == 'system' and loop.first and tools %}"
        + "{% elif m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant" + NL + JINJA_CALLS
        + "<|im_end|>" + NL
        + "{% else %}<|im_start|>{{ m.role }}" + NL + "{{ m.content }}<|im_end|>" + NL
        + "{% endif %}{% endfor %}"
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


MARKS_VAR = "_dj_generation_marks"  # the render variable that asks the generation tag to mark its text
GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")
# the variables every render sets itself: data.template_kwargs may not set them
RESERVED = ("messages", "add_generation_prompt", "tools", "bos_token", "eos_token", "add_bos", MARKS_VAR)


class GenerationTag(Extension):
    """`{% generation %}…{% endgeneration %}` (transformers' assistant-mask markers): the body renders as
    it is; when the render sets MARKS_VAR to (open, close), the body comes between those two characters."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_mark", [nodes.ContextReference()]), [], [], body).set_lineno(lineno)

    def _mark(self, context, caller) -> str:
        marks = context.get(MARKS_VAR)
        text = caller()
        return f"{marks[0]}{text}{marks[1]}" if marks else text


def now() -> datetime:
    """The clock templates read through strftime_now (Llama 3.2, SmolLM3 print today's date)."""
    return datetime.now()


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    """Hugging Face's `tojson` (jinja2's own sorts keys and escapes <, >, &, ' for HTML), so tool lists
    and arguments render as they do in transformers and the engines that read the exported template."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


# A conversation with a tool list, a call and its result: a template that renders all of it "supports tools"
PROBE_TOOLS = [{"type": "function", "function": {
    "name": "dj_probe", "description": "dj-probe-description",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
PROBE_MESSAGES = [
    {"role": "user", "content": "dj-probe-question"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call00001", "type": "function", "function": {"name": "dj_probe", "arguments": {"q": "dj-probe-arg"}}}]},
    {"role": "tool", "content": "dj-probe-result", "tool_call_id": "call00001", "name": "dj_probe"},
    {"role": "assistant", "content": "dj-probe-answer"},
]
PROBE_MARKS = ("dj-probe-description", "dj-probe-arg", "dj-probe-result", "dj-probe-answer")


@dataclass
class ChatTemplate:
    """A Jinja chat template plus the tokens it is rendered with."""

    name: str  # "model" or a built-in name
    source: str
    bos_token: str | None
    eos_token: str | None
    add_bos: bool
    stop_strings: tuple[str, ...] = ()
    kwargs: dict = field(default_factory=dict)  # data.template_kwargs: extra template variables

    def __post_init__(self) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols", GenerationTag])
        env.globals["raise_exception"] = _raise
        env.filters["tojson"] = _tojson
        env.globals["strftime_now"] = lambda fmt: now().strftime(fmt)
        try:
            self._compiled = env.from_string(self.source)
            self._reads = meta.find_undeclared_variables(env.parse(self.source))
        except jinja2.TemplateSyntaxError as e:
            raise ConfigError(f"chat template '{self.name}' is not valid Jinja: {e}",
                              fix="fix the template's Jinja, or choose another with data.template") from None
        self._check_kwargs()

    def _check_kwargs(self) -> None:
        for key in self.kwargs:
            if key in RESERVED:
                raise ConfigError(f"data.template_kwargs.{key}: '{key}' is set by dianjing for every render",
                                  fix=f"remove it; template_kwargs may not set {', '.join(RESERVED[:-1])}")
            if key not in self._reads:
                # its own variables are no options, unless it gives them a default (`if x is not defined`)
                assigned = set(re.findall(r"{%-?\s*set\s+(\w+)", self.source))
                defaulted = set(re.findall(r"(\w+)\s+is\s+(?:not\s+)?defined", self.source))
                reads = sorted(v for v in self._reads - (assigned - defaulted)
                               if v not in RESERVED and v not in ("raise_exception", "strftime_now"))
                raise ConfigError(f"data.template_kwargs.{key}: chat template '{self.name}' never reads '{key}'",
                                  fix="the template reads " + (", ".join(reads) if reads else "no option")
                                      + "; remove or rename the key")

    @property
    def has_generation_marks(self) -> bool:
        """Does the template mark assistant text with {% generation %} (SmolLM3, TRL-style templates)?"""
        return bool(GENERATION_TAG.search(self.source))

    def render(self, messages: list[dict], add_generation_prompt: bool = False,
               tools: list[dict] | None = None, marks: tuple[str, str] | None = None) -> str:
        """The template's text for `messages` (and `tools`, as apply_chat_template(..., tools=) passes them:
        [{"type": "function", "function": spec}], or None), with the template's kwargs. With `marks`, the text
        of each {% generation %} block comes between marks[0] and marks[1]."""
        return self._compiled.render(
            **self.kwargs, messages=messages, add_generation_prompt=add_generation_prompt, tools=tools,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "", add_bos=self.add_bos,
            **({MARKS_VAR: marks} if marks else {}),
        )

    @cached_property
    def supports_tools(self) -> bool:
        """Does this template render a tool list, calls and their results? (Tried on a probe conversation:
        a template that ignores `tools` or `tool_calls`, or refuses them, does not; it is then given the
        built-in tool format, data/tools.py.)"""
        try:
            text = self.render(PROBE_MESSAGES, tools=PROBE_TOOLS)
        except Exception:  # noqa: BLE001  any failure of a template on the probe means "no"
            return False
        return all(mark in text for mark in PROBE_MARKS)

    @cached_property
    def reasoning_style(self) -> str:
        """How the template takes an answer's reasoning, tried once on a probe: 'field' (it renders the
        `reasoning_content` of a message: Qwen3), 'inline' (it renders `<think>…</think>` written into the
        content: templates without a notion of reasoning) or 'dropped' (neither: DeepSeek's strip it)."""
        user = {"role": "user", "content": "dj-probe-question"}
        field_msg = {"role": "assistant", "content": "dj-probe-answer", "reasoning_content": "dj-probe-thought"}
        inline_msg = {"role": "assistant", "content": "<think>\ndj-probe-thought\n</think>\n\ndj-probe-answer"}
        for style, msg in (("field", field_msg), ("inline", inline_msg)):
            try:
                if "dj-probe-thought" in self.render([user, msg]):
                    return style
            except Exception:  # noqa: BLE001  a template that fails on the probe does not take it that way
                pass
        return "dropped"

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source, "bos_token": self.bos_token,
                "eos_token": self.eos_token, "add_bos": self.add_bos,
                "stop_strings": list(self.stop_strings), "kwargs": dict(self.kwargs)}

    @classmethod
    def from_json(cls, d: dict) -> "ChatTemplate":
        return cls(d["name"], d["source"], d.get("bos_token"), d.get("eos_token"), d.get("add_bos", False),
                   tuple(d.get("stop_strings", ())), dict(d.get("kwargs") or {}))


def tokenizer_adds_bos(tokenizer) -> bool:
    """Does the tokenizer put BOS in front of plain text? (Gemma, Llama do; GPT-2 style don't.)"""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def choose_template(name: str, tokenizer, kwargs: dict | None = None) -> tuple[ChatTemplate, str]:
    """Pick the template for a tokenizer; returns it and a sentence saying what was chosen. `kwargs`
    (data.template_kwargs) are passed to every render of it, and kept with it in the run folder."""
    kwargs = dict(kwargs or {})
    with_kwargs = f" with {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}" if kwargs else ""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # some tokenizers carry several named templates
        own = own.get("default") or next(iter(own.values()), None)
    add_bos = tokenizer_adds_bos(tokenizer)
    common = dict(bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
    if name in ("auto", "model") and own:
        # The model's template decides about BOS itself (most write {{ bos_token }}).
        return (ChatTemplate("model", own, add_bos=False, kwargs=kwargs, **common),
                "template: the model's own chat template" + with_kwargs)
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
                         stop_strings=tuple(BUILTIN_STOPS[name]), kwargs=kwargs, **common), why + with_kwargs)
