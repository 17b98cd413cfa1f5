"""The synth config: YAML + --set, unknown keys named, the teacher checked before anything is sent."""

import pytest

from dianjing.errors import ConfigError
from dianjing.teacher.settings import check_teacher, load_synth_config


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "synth.yaml"
    p.write_text("teacher:\n  base_url: http://127.0.0.1:8000/v1\n  model: qwen\n  terms_of_use: Apache-2.0\n"
                 "generate:\n  num_instructions: 50\nfilters:\n  rouge_threshold: 0.6\n")
    cfg = load_synth_config(p, ["teacher.max_concurrency=16", "generate.mode=alpaca", "output.out=d/x.jsonl"])
    assert (cfg.teacher.max_concurrency, cfg.generate.num_instructions, cfg.filters.rouge_threshold) == (16, 50, 0.6)
    check_teacher(cfg)
    out, work, report = cfg.output.paths()
    assert (str(out), str(work), str(report)) == ("d/x.jsonl", "d/x.work", "d/x.report.json")
    assert cfg.teacher.api_key_env == "OPENAI_API_KEY"


def test_identity_ignores_what_does_not_change_the_data():
    a = load_synth_config(None, ["generate.num_instructions=5", "teacher.max_concurrency=2"])
    b = load_synth_config(None, ["generate.num_instructions=500", "teacher.max_concurrency=64", "teacher.timeout_s=9"])
    assert a.identity() == b.identity()
    assert a.identity() != load_synth_config(None, ["teacher.temperature=1.0"]).identity()


@pytest.mark.parametrize("sets, message", [
    (["teacher.max_concurency=3"], "unknown key 'teacher.max_concurency'"),
    (["teacher.timeout_s=0"], "'teacher.timeout_s'"),
    (["filters.rouge_threshold=1.5"], "'filters.rouge_threshold'"),
    (["generate.mode=evol"], "'generate.mode'"),
])
def test_bad_keys_and_values_are_named(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_synth_config(None, sets)


@pytest.mark.parametrize("sets, message", [
    (["teacher.base_url=http://x/v1", "teacher.model=m"], "teacher.terms_of_use is not set"),
    (["teacher.terms_of_use=t"], "no teacher"),
    (["teacher.terms_of_use=t", "teacher.base_url=http://x/v1"], "teacher.model is not set"),
    (["teacher.terms_of_use=t", "teacher.base_url=localhost:8000", "teacher.model=m"], "not an http"),
    (["teacher.terms_of_use=t", "teacher.base_url=http://x/v1", "teacher.model=m", "teacher.local_model=p"],
     "both teacher.base_url and teacher.local_model"),
])
def test_teacher_checks(sets, message):
    with pytest.raises(ConfigError, match=message):
        check_teacher(load_synth_config(None, sets))


def test_terms_of_use_error_explains_what_to_write():
    with pytest.raises(ConfigError) as e:
        check_teacher(load_synth_config(None, ["teacher.base_url=http://x/v1", "teacher.model=m"]))
    assert "--set teacher.terms_of_use=" in str(e.value) and "provenance" in str(e.value)
