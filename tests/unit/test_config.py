import pytest

from dianjing.config import load_config
from dianjing.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.lr=1e-4", "adapter.target_modules=[q_proj, v_proj]", "data.files=a.jsonl"])
    assert cfg.train.lr == 1e-4
    assert cfg.adapter.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.files[0].path == "a.jsonl" and cfg.data.files[0].format == "auto"
    assert cfg.model.trust_remote_code is False


def test_unknown_key_names_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'train.learning_rate'"):
        load_config(p)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="'train.batch_size'"):
        load_config(None, ["train.batch_size=many"])


def test_bad_set_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])


def test_task_defaults_fill_only_what_is_unset(monkeypatch):
    from dianjing import config

    monkeypatch.setattr(config, "TASK_DEFAULTS", {"tag": {"task.head_lr": 1e-3, "train.epochs": 4}})
    said = []
    cfg = load_config(None, ["task.type=tag", "train.epochs=1"], log=said.append)
    assert cfg.task.head_lr == 1e-3 and cfg.train.epochs == 1  # the user's value wins
    assert said and "task.head_lr=0.001" in said[0] and "train.epochs" not in said[0]
    assert load_config(None, ["task.type=classify"]).task.head_lr is None  # other task types untouched
    assert load_config(None).task.head_lr is None  # sft untouched
    # the filled value is an ordinary setting: it is in the run's config.yaml, so a resume keeps it
    assert "head_lr: 0.001" in config.dump_config(cfg)
