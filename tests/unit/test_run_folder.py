"""dianjing.run_folder: one module writes and reads every kind of run folder and says what a folder is."""

import json

import pytest

from dianjing.data.templates import BUILTIN_STOPS, ChatTemplate
from dianjing.errors import DianjingError
from dianjing.run_folder import CHAT_ADAPTER, CHAT_FULL, NOT_A_RUN, SPECIALIST, UNFINISHED, RunFolder


def _template():
    name = next(iter(BUILTIN_STOPS))
    return ChatTemplate(name=name, source="{% for m in messages %}{{ m.content }}{% endfor %}", bos_token="<s>",
                        eos_token="</s>", add_bos=True, stop_strings=tuple(BUILTIN_STOPS[name]))


def _chat_run(tmp_path, method="lora"):
    run = RunFolder(tmp_path / f"run-{method}")
    run.path.mkdir()
    run.config.write_text("model: {}\n")
    run.write_template(_template())
    run.write_summary({"steps": 3, "note": "點睛"})
    run.write_info({"base_model": "/m", "model_name": "m", "method": method, "dtype": "bfloat16"})
    return run


SPEC_INFO = {"base_model": "/b", "model_name": "b", "task": "classify", "method": "lora", "dtype": "float32"}


def _specialist_run(tmp_path):
    spec = RunFolder(tmp_path / "spec")
    spec.checkpoints.mkdir(parents=True)
    spec.config.write_text("task: {type: classify}\n")
    spec.write_info(SPEC_INFO)
    return spec


def test_round_trip_and_kinds(tmp_path):
    run = _chat_run(tmp_path)
    assert run.kind() == CHAT_ADAPTER
    assert run.info() == {"base_model": "/m", "model_name": "m", "method": "lora", "dtype": "bfloat16"}
    assert run.summary()["note"] == "點睛"
    assert run.template().to_json() == _template().to_json()
    assert _chat_run(tmp_path, "full").kind() == CHAT_FULL
    spec = RunFolder(tmp_path / "spec")
    spec.path.mkdir()
    spec.write_info(SPEC_INFO)
    assert spec.kind() == SPECIALIST and spec.info()["task"] == "classify"
    unfinished = RunFolder(tmp_path / "unfinished")
    unfinished.checkpoints.mkdir(parents=True)
    assert unfinished.kind() == UNFINISHED
    assert RunFolder(tmp_path / "nothing").kind() == NOT_A_RUN
    (tmp_path / "empty").mkdir()
    assert RunFolder(tmp_path / "empty").kind() == NOT_A_RUN


def test_a_wrong_kind_says_what_the_folder_is_and_what_fits(tmp_path):
    spec = _specialist_run(tmp_path)
    with pytest.raises(DianjingError) as e:
        spec.require(CHAT_ADAPTER, CHAT_FULL, command="dianjing chat")
    msg = str(e.value)
    assert "specialist run" in msg and "dianjing predict" in msg and "--resume" not in msg
    unfinished = RunFolder(tmp_path / "spec2")
    unfinished.checkpoints.mkdir(parents=True)
    with pytest.raises(DianjingError, match="train --resume"):
        unfinished.require(SPECIALIST, command="dianjing predict")
    assert _chat_run(tmp_path).require(CHAT_ADAPTER, CHAT_FULL, command="dianjing chat") == CHAT_ADAPTER


def test_chat_on_a_specialist_run_points_at_eval_and_predict(tmp_path):
    """The bug: `dianjing chat` on a specialist run told the user to run `dianjing train --resume`."""
    from dianjing.infer.load import load_run

    spec = _specialist_run(tmp_path)
    with pytest.raises(DianjingError) as e:
        load_run(spec.path)
    assert "specialist run" in str(e.value) and "dianjing eval" in str(e.value) and "--resume" not in str(e.value)


def test_a_damaged_run_json_is_an_error_that_says_so(tmp_path):
    run = _chat_run(tmp_path)
    run.info_path.write_text("{not json")
    with pytest.raises(DianjingError, match="run.json is not valid JSON"):
        run.info()


def test_metrics_only_the_last_line_may_be_cut(tmp_path):
    from dianjing.train.loop import _truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')
    _truncate_metrics(path, 2)
    assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [1, 2]
    path.write_text('{"step": 1}\ngarbage\n{"step": 2}\n')
    with pytest.raises(DianjingError, match=r"metrics.jsonl:2"):
        _truncate_metrics(path, 2)


def test_a_model_folder_with_a_config_yaml_is_not_an_unfinished_run(tmp_path):
    model = tmp_path / "some-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "config.yaml").write_text("x: 1\n")
    (model / "checkpoints").mkdir()
    assert RunFolder(model).kind() == NOT_A_RUN  # so chat/serve load it as a model


def test_kind_of_a_damaged_run_says_it_is_damaged(tmp_path):
    run = _chat_run(tmp_path)
    run.info_path.write_text("{")
    with pytest.raises(DianjingError, match="not valid JSON"):
        run.kind()
