"""teacher.device: where a local teacher computes; checked like model.device, and not part of what
a resumed run must repeat (the journal answers the requests already made, wherever they ran)."""

import pytest

from dianjing.errors import ConfigError
from dianjing.teacher.settings import load_synth_config


def test_teacher_device_takes_the_devices_model_device_takes():
    for value in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert load_synth_config(None, [f"teacher.device={value}"]).teacher.device == value
    with pytest.raises(ConfigError) as e:
        load_synth_config(None, ["teacher.device=gpu"])
    assert "teacher.device" in str(e.value)


def test_teacher_device_does_not_change_the_runs_identity():
    assert (load_synth_config(None, ["teacher.device=cuda"]).identity()
            == load_synth_config(None, ["teacher.device=cpu"]).identity())
