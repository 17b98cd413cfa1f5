"""Registry and mixture YAML: strict validation with errors that name the key, builtins, overrides."""

import pytest

from dianjing.errors import ConfigError
from dianjing.generalist.registry import (builtin_path, load_mixture, load_registries, load_registry,
                                          t0_dir_for)

TASK = """
tasks:
  - name: sent
    source: data.jsonl
    cluster: sentiment
    options: [negative, positive]
    templates:
      - {name: a, input: "{{ text }}", target: "{{ options[label] }}"}
"""


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_registry_loads_and_defaults(tmp_path):
    reg = load_registry(_write(tmp_path, "r.yaml", TASK))
    t = reg.tasks[0]
    assert t.dataset_id == "sent" and t.metric == "accuracy" and t.templates[0].turned_around is False
    assert reg.base_dir == tmp_path.resolve()


@pytest.mark.parametrize("bad, words", [
    (TASK.replace("cluster: sentiment", "cluster: sentiment\n    clustr: x"), ["unknown key", "clustr"]),
    (TASK.replace("options: [negative, positive]", "options: [only]"), ["at least two"]),
    (TASK.replace('target: "{{ options[label] }}"}', 'target: x, turned: true}'), ["unknown key", "turned"]),
    (TASK.replace("cluster: sentiment", "cluster: sentiment\n    metric: bleu"), ["metric"]),
    (TASK + "      - {name: a, input: x, target: y}\n", ["template names must be unique"]),
    (TASK + "      - {name: b, input: x, target: y, chain_of_thought: true}\n", ["rationale_field"]),
])
def test_registry_errors_name_the_problem(tmp_path, bad, words):
    with pytest.raises(ConfigError) as e:
        load_registry(_write(tmp_path, "r.yaml", bad))
    for w in words:
        assert w in str(e.value)


def test_mixture_overrides_and_unknown_keys(tmp_path):
    _write(tmp_path, "r.yaml", TASK)
    m = _write(tmp_path, "m.yaml", "registries: r.yaml\nheld_out: [sentiment]\n")
    mix = load_mixture(m, ["mixing.total=50", "mixing.method=temperature", "seed=3"])
    assert mix.registries == ["r.yaml"] and mix.mixing.total == 50 and mix.mixing.method == "temperature"
    assert mix.mixing.cap == 3000 and mix.seed == 3 and mix.templates.options_suffix is True
    assert [t.name for t in load_registries(mix)[0].tasks] == ["sent"]
    with pytest.raises(ConfigError, match="unknown key 'mixing.kap'"):
        load_mixture(m, ["mixing.kap=5"])


def test_duplicate_task_names_across_registries(tmp_path):
    _write(tmp_path, "r1.yaml", TASK)
    _write(tmp_path, "r2.yaml", TASK)
    mix = load_mixture(_write(tmp_path, "m.yaml", "registries: [r1.yaml, r2.yaml]\n"))
    with pytest.raises(ConfigError, match="defined in both"):
        load_registries(mix)


def test_builtins_and_missing_files(tmp_path):
    assert builtin_path("toy-mixture").is_file()
    mix = load_mixture("builtin:toy-mixture")
    assert mix.held_out == ["sentiment"]
    regs = load_registries(mix)
    assert {t.cluster for t in regs[0].tasks} >= {"sentiment", "topic", "nli", "summarisation"}
    with pytest.raises(ConfigError, match="toy-mixture"):  # the error lists what exists
        load_mixture("builtin:nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_mixture(tmp_path / "missing.yaml")


def test_t0_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIANJING_T0_DIR", raising=False)
    m = load_mixture(_write(tmp_path, "m.yaml", "registries: [t0]\n"))
    with pytest.raises(ConfigError, match="DIANJING_T0_DIR"):
        t0_dir_for(m)
    (tmp_path / "t0files").mkdir()
    monkeypatch.setenv("DIANJING_T0_DIR", str(tmp_path / "t0files"))
    assert t0_dir_for(m) == tmp_path / "t0files"
    m2 = load_mixture(_write(tmp_path, "m2.yaml", "registries: [t0]\nt0_dir: t0files\n"))
    assert t0_dir_for(m2) == tmp_path / "t0files"
