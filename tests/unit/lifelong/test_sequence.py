"""The sequence file: unknown keys and wrong values fail naming the task and key; paths; stage configs."""

import pytest

from dianjing.errors import ConfigError
from dianjing.lifelong.sequence import load_sequence, stage_config
from tests.helpers import write_sequence

TASK = {"name": "news", "files": ["news.jsonl"], "format": "classify", "metric": "accuracy"}


def _load(tmp_path, tree, overrides=None):
    return load_sequence(write_sequence(tmp_path / "seq.yaml", tree), overrides)


def test_defaults_are_the_papers_values_and_paths_are_relative_to_the_file(tmp_path):
    seq = _load(tmp_path, {"tasks": [TASK, {**TASK, "name": "b", "files": "/abs/b.jsonl"}]})
    assert seq.strategy == "lamol"
    assert (seq.lamol.lm_lambda, seq.lamol.gamma, seq.lamol.top_k, seq.lamol.gen_token) == (0.25, 0.2, 20, "per_task")
    assert seq.tasks[0].files == [str((tmp_path / "news.jsonl").resolve())]
    assert seq.tasks[1].files == ["/abs/b.jsonl"]
    assert seq.gen_text("news") == "__news__"
    assert _load(tmp_path, {"tasks": [TASK], "lamol": {"gen_token": "shared"}}).gen_text("news") == "__gen__"


@pytest.mark.parametrize("tree, want", [
    ({"tasks": [TASK, {**TASK, "name": "b", "epochs": 3}]}, "unknown key 'tasks[1] (b).epochs'"),
    ({"tasks": [TASK], "lamol": {"gama": 0.5}}, "unknown key 'lamol.gama' (did you mean 'gamma'?)"),
    ({"tasks": [TASK], "stratgy": "lamol"}, "unknown key 'stratgy' (did you mean 'strategy'?)"),
    ({"tasks": []}, "'tasks'"),
    ({"tasks": [{**TASK, "files": []}]}, "'tasks[0] (news).files'"),
    ({"tasks": [{k: v for k, v in TASK.items() if k != "metric"}]}, "'tasks[0] (news).metric' is required"),
    ({"tasks": [{**TASK, "metric": "bleu"}]}, "'tasks[0] (news).metric'"),
    ({"tasks": [{**TASK, "fields": {"answer": "y"}}]}, "'answer' is not a key of format classify"),
    ({"tasks": [{**TASK, "format": "qa", "question": "Why?"}]}, "question applies to format classify only"),
    ({"tasks": [TASK, TASK]}, "task name 'news' is used twice"),
    ({"tasks": [TASK], "strategy": "ewc"}, "'strategy'"),
    ({"tasks": [TASK], "markers": {"task_gen": "<gen>"}}, "must contain {task}"),
])
def test_bad_sequence_files_name_the_task_and_key(tmp_path, tree, want):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, tree)
    assert want in str(e.value), str(e.value)


def test_a_tasks_own_train_settings_are_checked_and_named(tmp_path):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, {"tasks": [TASK, {**TASK, "name": "b", "train": {"learning_rate": 1e-4}}]})
    assert "tasks[1] (b).train" in str(e.value) and "unknown key 'learning_rate' (known: " in str(e.value)
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, {"tasks": [{**TASK, "train": {"epochs": -1}}]})
    assert "tasks[0] (news).train" in str(e.value) and "'epochs'" in str(e.value)


def test_overrides_apply_to_the_sequence_files_keys(tmp_path):
    seq = _load(tmp_path, {"tasks": [TASK]}, ["lamol.gamma=0.5", "strategy=replay", "train.lr=1e-4"])
    assert (seq.lamol.gamma, seq.strategy, seq.train.lr) == (0.5, "replay", 1e-4)
    with pytest.raises(ConfigError, match="lamol.gama"):
        _load(tmp_path, {"tasks": [TASK]}, ["lamol.gama=0.5"])


def test_stage_config_is_a_lifelong_run_with_the_tasks_train_settings(tmp_path):
    seq = _load(tmp_path, {"tasks": [TASK, {**TASK, "name": "b", "train": {"epochs": 5}}],
                           "train": {"epochs": 1, "lr": 1e-3}, "adapter": {"r": 4}, "max_length": 99})
    a = stage_config(seq, [seq.tasks[0]], tmp_path / "s1")
    b = stage_config(seq, [seq.tasks[1]], tmp_path / "s2")
    both = stage_config(seq, seq.tasks, tmp_path / "m")
    assert a.task.type == "lifelong" and a.adapter.r == 4 and a.data.max_length == 99 and a.data.files == []
    assert (a.train.epochs, b.train.epochs, both.train.epochs) == (1, 5, 1)
    assert b.train.lr == 1e-3 and b.train.output_dir == str(tmp_path / "s2")
