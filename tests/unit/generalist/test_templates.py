"""Templates: Jinja over record fields in a sandbox, FLAN's options suffix, turned-around templates,
few-shot exemplars and chain of thought."""

import pytest

from dianjing.errors import ConfigError, DataError
from dianjing.generalist.registry import Task
from dianjing.generalist.templates import CompiledTask, with_options


def _task(**kw):
    base = dict(name="sent", source="x.jsonl", cluster="sentiment", fields={"text": "review"},
                options=["negative", "positive"],
                templates=[{"name": "plain", "input": "{{ text }}\nPositive or negative?", "target": "{{ options[label] }}"},
                           {"name": "listed", "input": "Is it {{ options | join(' or ') }}? {{ text }}",
                            "target": "{{ options[label] }}", "options_suffix": False},
                           {"name": "yesno", "input": "{{ text }} Good?", "target": "{{ options[label] }}",
                            "options": ["no", "yes"]},
                           {"name": "write", "input": "Write a {{ ['negative', 'positive'][label] }} review.",
                            "target": "{{ text }}", "turned_around": True}])
    base.update(kw)
    return CompiledTask(Task.model_validate(base))


REC = {"review": "Loved it.", "label": 1}


def _render(ct, name, rec=REC, **kw):
    v = ct.variables(rec, "f.jsonl:1")
    tmpl = next(t for t in ct.task.templates if t.name == name)
    return ct.render(tmpl, v, "f.jsonl:1", options_suffix=kw.pop("options_suffix", True), **kw)


def test_options_suffix_is_flan_style():
    ex = _render(_task(), "plain")
    assert ex.prompt == "Loved it.\nPositive or negative?\n\nOPTIONS:\n- negative\n- positive"
    assert ex.target == "positive" and ex.options == ["negative", "positive"] and ex.references == ["positive"]
    assert with_options("Q", ["a", "b"]) == "Q\n\nOPTIONS:\n- a\n- b"


def test_suffix_switches_off_globally_and_per_template():
    ct = _task()
    off = _render(ct, "plain", options_suffix=False)
    assert "OPTIONS" not in off.prompt and off.options == ["negative", "positive"]  # still ranked at eval
    listed = _render(ct, "listed")
    assert listed.prompt == "Is it negative or positive? Loved it." and listed.options == ["negative", "positive"]


def test_template_options_override_task_options():
    ex = _render(_task(), "yesno")
    assert ex.target == "yes" and ex.options == ["no", "yes"] and ex.prompt.endswith("- no\n- yes")


def test_turned_around_has_no_options():
    ex = _render(_task(), "write")
    assert ex.prompt == "Write a positive review." and ex.target == "Loved it."
    assert ex.options is None and ex.turned_around


def test_few_shot_exemplars_use_the_same_template():
    ct = _task()
    shots = [ct.variables({"review": "Awful.", "label": 0}, "f:2"), ct.variables({"review": "Great.", "label": 1}, "f:3")]
    ex = _render(ct, "yesno", exemplars=shots)
    blocks = ex.prompt.split("\n\n")
    assert blocks[0] == "Awful. Good?" and blocks[1] == "OPTIONS:\n- no\n- yes\nno"
    assert blocks[2] == "Great. Good?" and blocks[3] == "OPTIONS:\n- no\n- yes\nyes"
    assert blocks[4] == "Loved it. Good?" and ex.shots == 2 and ex.target == "yes"


def test_missing_field_and_undefined_variable_are_named():
    ct = _task()
    with pytest.raises(DataError, match="review"):
        ct.variables({"text": "x", "label": 0}, "f.jsonl:7")
    bad = _task(templates=[{"name": "t", "input": "{{ txet }}", "target": "x"}])
    with pytest.raises(DataError, match="txet"):
        _render(bad, "t")
    with pytest.raises(ConfigError, match="not valid Jinja"):
        _task(templates=[{"name": "t", "input": "{{ text ", "target": "x"}])


def test_sandbox_blocks_attribute_escape():
    evil = _task(templates=[{"name": "t", "input": "{{ text.__class__.__mro__ }}", "target": "x"}])
    with pytest.raises(DataError):
        _render(evil, "t")


def test_options_from_a_field_and_answer_field_references():
    ct = CompiledTask(Task.model_validate(dict(
        name="mc", source="x", cluster="qa", options="choices", answer_field="answers", metric="squad_f1",
        templates=[{"name": "t", "input": "{{ q }}", "target": "{{ answers[0] }}"}])))
    v = ct.variables({"q": "Capital?", "choices": ["Paris", "Rome"], "answers": ["Paris", "paris city"]}, "f:1")
    ex = ct.render(ct.task.templates[0], v, "f:1", options_suffix=True)
    assert ex.options == ["Paris", "Rome"] and ex.references == ["Paris", "paris city"]
    with pytest.raises(DataError, match="choices"):
        ct.variables({"q": "x", "choices": "Paris", "answers": []}, "f:2")


def test_chain_of_thought_needs_a_rationale():
    ct = CompiledTask(Task.model_validate(dict(
        name="qa", source="x", cluster="qa", metric="exact_match", rationale_field="why", answer_field="a",
        templates=[{"name": "cot", "input": "{{ q }} Think step by step.", "target": "{{ rationale }} So: {{ a }}",
                    "chain_of_thought": True}])))
    v = ct.variables({"q": "2+2?", "a": "4", "why": " Two and two make four. "}, "f:1")
    ex = ct.render(ct.task.templates[0], v, "f:1", options_suffix=True)
    assert ex.target == "Two and two make four. So: 4" and ex.references == ["4"]
    with pytest.raises(DataError, match="chain-of-thought"):
        ct.render(ct.task.templates[0], ct.variables({"q": "x", "a": "1", "why": ""}, "f:2"), "f:2",
                  options_suffix=True)


def test_empty_target_is_an_error():
    ct = _task(templates=[{"name": "t", "input": "{{ text }}", "target": "{{ '' }}"}])
    with pytest.raises(DataError, match="empty target"):
        _render(ct, "t")
