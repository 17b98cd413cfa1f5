"""A config error names the key, says what is wrong and how to fix it (a misspelt key gets the
closest real one; otherwise the section's keys are listed)."""

import pytest

from dianjing.config import load_config
from dianjing.errors import ConfigError


@pytest.mark.parametrize("override,says", [
    ("train.lrr=1", "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    ("trian.lr=1", "unknown key 'trian' (did you mean 'train'?)"),
    ("train.zzzz=1", "train has: output_dir, epochs"),
    ("train.lr=abc", "'train.lr': Input should be a valid number"),
])
def test_config_errors_name_the_key_and_the_fix(override, says):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert says in str(e.value) and "fix: docs/configuration.md" in str(e.value)
