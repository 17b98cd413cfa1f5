"""Instruction templates over a record's fields: Jinja2 in a sandbox, FLAN-style options suffix,
few-shot exemplars.

A template's `input` and `target` are Jinja strings. They see the record's own fields, the
task's `fields` aliases (variable -> record field), `options` (the answer choices, when the
task has them) and `rationale` (chain-of-thought templates). Undefined variables are errors,
so a typo in a template fails on the first record and names the variable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dianjing.errors import ConfigError, DataError
from dianjing.generalist.registry import Task, Template

OPTIONS_HEADER = "\n\nOPTIONS:\n"
EXEMPLAR_SEP = "\n\n"  # between few-shot exemplars, and between the last one and the query

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                                     autoescape=False)


@dataclass
class Example:
    """One rendered instruction: what the model sees, what it should answer, and where it came from."""

    prompt: str
    target: str
    task: str
    dataset: str
    cluster: str
    template: str
    options: list[str] | None = None  # answer choices, for ranking
    references: list[str] = field(default_factory=list)  # gold answers for EM/F1 (default [target])
    shots: int = 0
    turned_around: bool = False

    def record(self, fmt: str = "prompt_completion") -> dict:
        meta = {"task": self.task, "dataset": self.dataset, "cluster": self.cluster, "template": self.template,
                "shots": self.shots}
        if fmt == "messages":
            return {"messages": [{"role": "user", "content": self.prompt},
                                 {"role": "assistant", "content": self.target}], **meta}
        return {"prompt": self.prompt, "completion": self.target, **meta}


class CompiledTask:
    """A task with its templates compiled once; renders records into Examples."""

    def __init__(self, task: Task):
        self.task = task
        self.compiled: dict[str, tuple[jinja2.Template, jinja2.Template]] = {}
        for t in task.templates:
            try:
                self.compiled[t.name] = (_ENV.from_string(t.input), _ENV.from_string(t.target))
            except jinja2.TemplateSyntaxError as e:
                raise ConfigError(f"task '{task.name}', template '{t.name}': not valid Jinja: {e.message} "
                                  f"(line {e.lineno})") from None

    def variables(self, rec: dict, where: str) -> dict:
        """The record's fields plus the task's aliases, options and rationale."""
        task = self.task
        v = dict(rec)
        for var, fld in task.fields.items():
            if fld not in rec:
                raise DataError(f"missing (task '{task.name}' maps template variable '{var}' to it)",
                                file=where, field=fld)
            v[var] = rec[fld]
        if isinstance(task.options, str):
            opts = rec.get(task.options)
            if not isinstance(opts, list) or len(opts) < 2 or not all(isinstance(o, (str, int, float)) for o in opts):
                raise DataError("expected a list of at least two answer options", file=where, field=task.options)
            v["options"] = [str(o) for o in opts]
        elif task.options is not None:
            v["options"] = list(task.options)
        if task.rationale_field:
            r = rec.get(task.rationale_field)
            v["rationale"] = r.strip() if isinstance(r, str) else ""
        return v

    def has_rationale(self, variables: dict) -> bool:
        return bool(variables.get("rationale"))

    def render(self, tmpl: Template, variables: dict, where: str, *, options_suffix: bool,
               exemplars: list[dict] = ()) -> Example:
        """Render one record with one template (and k exemplars rendered the same way before it)."""
        task = self.task
        if tmpl.chain_of_thought and not self.has_rationale(variables):
            raise DataError("empty, needed by a chain-of-thought template", file=where,
                            field=task.rationale_field)
        prompt, target, options = self._one(tmpl, variables, where, options_suffix)
        parts = []
        for ex in exemplars:
            p, t, _ = self._one(tmpl, ex, where + " (exemplar)", options_suffix)
            parts.append(f"{p}\n{t}")
        if parts:
            prompt = EXEMPLAR_SEP.join([*parts, prompt])
        refs = [target]
        if task.answer_field and not tmpl.turned_around:
            gold = variables.get(task.answer_field)
            if isinstance(gold, dict) and isinstance(gold.get("text"), list):  # SQuAD's {"text": [...]}
                gold = gold["text"]
            if isinstance(gold, list) and gold:
                refs = [str(g) for g in gold]
            elif isinstance(gold, (str, int, float)) and str(gold).strip():
                refs = [str(gold)]
        return Example(prompt, target, task.name, task.dataset_id, task.cluster, tmpl.name,
                       options=None if tmpl.turned_around else options, references=refs, shots=len(parts),
                       turned_around=tmpl.turned_around)

    def _one(self, tmpl: Template, variables: dict, where: str, options_suffix: bool):
        if tmpl.options is not None:
            variables = {**variables, "options": list(tmpl.options)}
        inp, tgt = self.compiled[tmpl.name]
        try:
            prompt = inp.render(variables).strip()
            target = tgt.render(variables).strip()
        except jinja2.UndefinedError as e:
            raise DataError(f"template '{tmpl.name}' of task '{self.task.name}': {e.message}", file=where,
                            fix="check the template's variable names against the record's fields and `fields`") from None
        except (jinja2.TemplateError, TypeError, ValueError, IndexError, KeyError) as e:
            raise DataError(f"template '{tmpl.name}' of task '{self.task.name}' failed: {e}", file=where) from None
        if not prompt:
            raise DataError(f"template '{tmpl.name}' rendered an empty input", file=where)
        if not target:
            raise DataError(f"template '{tmpl.name}' rendered an empty target", file=where)
        options = variables.get("options")
        if options is not None and not tmpl.turned_around:
            if options_suffix and tmpl.options_suffix is not False:
                prompt = with_options(prompt, options)
        else:
            options = None
        return prompt, target, options


def with_options(prompt: str, options: list[str]) -> str:
    """FLAN's options suffix: a blank line, 'OPTIONS:', then one '- option' per line."""
    return prompt + OPTIONS_HEADER + "\n".join(f"- {o}" for o in options)
