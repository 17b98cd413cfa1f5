"""Seed tasks: ours (zh-TW and English, classification marked) and self-instruct's file; errors name file:line."""

import pytest

from dianjing.errors import DataError
from dianjing.teacher.seeds import load_seeds, seeds_digest
from tests.helpers import SHARED_DATA

SELF_INSTRUCT = SHARED_DATA / "selfinstruct" / "seed_tasks.jsonl"


def test_builtin_seeds_are_bilingual_with_classification_tasks():
    seeds = load_seeds()
    assert 35 <= len(seeds) <= 60
    zh = [s for s in seeds if any("\u4e00" <= c <= "\u9fff" for c in s.instruction)]
    assert len(zh) >= 12 and len(seeds) - len(zh) >= 12
    cls = [s for s in seeds if s.is_classification]
    assert len(cls) >= 6 and any(s in zh for s in cls)
    assert all(s.instances and all(out.strip() for _, out in s.instances) for s in seeds)
    assert len({s.id for s in seeds}) == len(seeds)


@pytest.mark.skipif(not SELF_INSTRUCT.exists(), reason="../shared/data not present")
def test_reads_self_instructs_seed_file():
    seeds = load_seeds(str(SELF_INSTRUCT))
    assert len(seeds) == 175 and sum(s.is_classification for s in seeds) == 26
    assert seeds[1].id == "seed_task_1" and seeds[1].instances[0][0] == "Night : Day :: Right : Left"
    assert seeds_digest(seeds) != seeds_digest(load_seeds())


@pytest.mark.parametrize("line, where", [
    ('{"instruction": "x", "instances": []}', "field 'instances'"),
    ('{"instances": [{"input": "", "output": "y"}]}', "field 'instruction'"),
    ('{"instruction": "x", "instances": [{"input": "", "output": 3}]}', "field 'instances[0]'"),
    ('{"instruction": "x", "instances": [{"output": "y"}], "is_classification": "yes"}', "field 'is_classification'"),
    ('{"instruction": "x", "instances": [{"output": "y"}]', "not valid JSON"),
    ('{"id": "a", "instruction": "x", "instances": [{"output": "y"}]}', "id 'a' also used on line 1"),
])
def test_bad_seed_lines_are_named(tmp_path, line, where):
    p = tmp_path / "seeds.jsonl"
    p.write_text('{"id": "a", "instruction": "ok", "instances": [{"input": "", "output": "fine"}]}\n' + line + "\n")
    with pytest.raises(DataError) as e:
        load_seeds(str(p))
    assert f"{p}:2" in str(e.value) and where in str(e.value)


def test_missing_file_and_too_few_seeds(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_seeds(str(tmp_path / "nope.jsonl"))
    p = tmp_path / "one.jsonl"
    p.write_text('{"instruction": "x", "instances": [{"output": "y"}]}\n')
    with pytest.raises(DataError, match="at least 2"):
        load_seeds(str(p))
