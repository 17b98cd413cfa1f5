"""Mixing: capped proportional and temperature rates, the held-out leak check, template policy,
the report, determinism, and a file that `dianjing train` reads."""

import json
from collections import Counter

import pytest

from dianjing.config import DataConfig
from dianjing.data.load import load_conversations
from dianjing.errors import ConfigError
from dianjing.generalist.mix import _largest_remainder, build_mixture, mixing_counts, write_mixture
from dianjing.generalist.registry import Mixture, load_mixture


def _records(path, n, label_key="label"):
    path.write_text("".join(json.dumps({"text": f"item {i}", label_key: i % 2}) + "\n" for i in range(n)))


def _setup(tmp_path, sizes=None, extra_tasks="", mixture="", tpl_count=2):
    sizes = sizes or {"a": 30, "b": 10, "c": 6}
    clusters = {"a": "topic", "b": "nli", "c": "sentiment"}
    tasks = ""
    for name, n in sizes.items():
        _records(tmp_path / f"{name}.jsonl", n)
        tmpls = "".join(f"      - {{name: t{k}, input: \"T{k} {{{{ text }}}}\", target: \"{{{{ options[label] }}}}\"}}\n"
                        for k in range(tpl_count))
        tasks += (f"  - name: {name}\n    source: {name}.jsonl\n    cluster: {clusters.get(name, 'other')}\n"
                  f"    options: [\"no\", \"yes\"]\n    templates:\n{tmpls}")
    (tmp_path / "reg.yaml").write_text("tasks:\n" + tasks + extra_tasks)
    (tmp_path / "mix.yaml").write_text("registries: [reg.yaml]\nheld_out: [sentiment]\n" + mixture)
    return tmp_path / "mix.yaml"


def test_largest_remainder_sums_exactly():
    got = _largest_remainder(10, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert sum(got.values()) == 10 and sorted(got.values()) == [3, 3, 4]
    assert _largest_remainder(5, {"a": 0.0}) == {"a": 0}


def test_proportional_with_cap_and_temperature():
    mix = Mixture(registries=["x"], mixing={"cap": 3000, "total": 1000})
    sizes = {"big": 100_000, "mid": 3000, "small": 1000}
    counts, facts = mixing_counts(sizes, {k: k for k in sizes}, mix)
    assert counts == {"big": 429, "mid": 428, "small": 143}  # 3000 : 3000 : 1000
    assert facts["big"]["capped"] and not facts["mid"]["capped"] and facts["big"]["counted_as"] == 3000
    hot = Mixture(registries=["x"], mixing={"method": "temperature", "temperature": 1000.0, "total": 999})
    counts, _ = mixing_counts(sizes, {k: k for k in sizes}, hot)
    assert max(counts.values()) - min(counts.values()) <= 1  # T → ∞: uniform over datasets
    # default total: the sum of capped sizes; a dataset's share is split among its tasks by size
    counts, facts = mixing_counts({"x1": 2000, "x2": 2000, "y": 10}, {"x1": "x", "x2": "x", "y": "y"},
                                  Mixture(registries=["x"]))
    assert counts == {"x1": 1500, "x2": 1500, "y": 10} and facts["x"]["capped"]


def test_mixture_report_templates_and_held_out(tmp_path):
    result = build_mixture(load_mixture(_setup(tmp_path)), log=lambda *_: None)
    rep = result.report
    assert rep["total"] == 40 and rep["held_out"] == {"sentiment": ["c"]} and rep["held_out_datasets"] == ["c"]
    assert {e.task for e in result.examples} == {"a", "b"}
    assert rep["tasks"]["a"]["examples"] == 30 and rep["tasks"]["a"]["templates"] == {"t0": 15, "t1": 15}
    assert rep["clusters"] == {"nli": 10, "topic": 30} and rep["seed"] == 0
    assert sum(rep["template_totals"].values()) == 40


def test_leak_check_by_dataset_and_by_source(tmp_path):
    shared = ("  - name: a_inverse\n    dataset: c\n    source: a.jsonl\n    cluster: generation\n"
              "    metric: rouge_l\n    templates:\n      - {name: w, input: \"x {{ text }}\", target: \"{{ text }}\"}\n")
    mix = load_mixture(_setup(tmp_path, extra_tasks=shared))
    with pytest.raises(ConfigError) as e:
        build_mixture(mix, log=lambda *_: None)
    assert "a_inverse" in str(e.value) and "'c'" in str(e.value) and "held out" in str(e.value)
    # the same file under another dataset id is caught too
    sneaky = shared.replace("dataset: c", "dataset: other").replace("source: a.jsonl", "source: c.jsonl")
    with pytest.raises(ConfigError, match="a_inverse.*c.jsonl"):
        build_mixture(load_mixture(_setup(tmp_path, extra_tasks=sneaky)), log=lambda *_: None)
    # naming a held-out task explicitly
    with pytest.raises(ConfigError, match="task 'c'.*held-out cluster 'sentiment'"):
        build_mixture(load_mixture(_setup(tmp_path, mixture="include: {tasks: [a, c]}\n")), log=lambda *_: None)
    # excluding the offender is the fix
    fixed = load_mixture(_setup(tmp_path, extra_tasks=shared, mixture="exclude_tasks: [a_inverse]\n"))
    assert build_mixture(fixed, log=lambda *_: None).report["total"] == 40


def test_unknown_names_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="no task is in cluster 'sentimnt'"):
        build_mixture(load_mixture(_setup(tmp_path, mixture=""), ["held_out=[sentimnt]"]), log=lambda *_: None)
    with pytest.raises(ConfigError, match="unknown cluster 'nope'"):
        build_mixture(load_mixture(_setup(tmp_path), ["include.clusters=[nope]"]), log=lambda *_: None)


def test_repeats_shift_templates_and_seed_is_deterministic(tmp_path):
    m = _setup(tmp_path, sizes={"a": 4, "c": 4}, tpl_count=2)
    result = build_mixture(load_mixture(m, ["mixing.total=8"]), log=lambda *_: None)
    pairs = Counter((e.prompt.split(" ", 1)[1], e.template) for e in result.examples)
    assert len(pairs) == 8  # each of the 4 records once with each template
    assert result.report["tasks"]["a"]["repeats"] == 4
    again = build_mixture(load_mixture(m, ["mixing.total=8"]), log=lambda *_: None)
    assert [e.prompt for e in again.examples] == [e.prompt for e in result.examples]
    other = build_mixture(load_mixture(m, ["mixing.total=8", "seed=1"]), log=lambda *_: None)
    assert [e.prompt for e in other.examples] != [e.prompt for e in result.examples]


def test_random_policy_few_shot_and_max_chars(tmp_path):
    m = _setup(tmp_path, sizes={"a": 40, "c": 4}, tpl_count=3)
    result = build_mixture(load_mixture(m, ["templates.policy=random", "few_shot.k=2", "few_shot.ratio=0.5"]),
                           log=lambda *_: None)
    rep = result.report["tasks"]["a"]
    assert set(rep["templates"]) == {"t0", "t1", "t2"} and 8 <= rep["few_shot"] <= 32
    few = next(e for e in result.examples if e.shots)
    assert few.prompt.count("\n\nT") == 2 and few.prompt.count("OPTIONS:") == 3
    short = build_mixture(load_mixture(m, ["max_chars=40", "templates.options_suffix=false"]), log=lambda *_: None)
    rep = short.report["tasks"]["a"]
    assert rep["usable"] == 40 and rep["examples"] == 40
    tiny = build_mixture(load_mixture(m, ["max_chars=8", "templates.options_suffix=false"]), log=lambda *_: None)
    rep = tiny.report["tasks"]["a"]
    assert rep["usable"] == 0 and rep["examples"] == 0 and rep["skipped"] == {"template 't0': longer than max_chars=8": 40,
                                                                               "template 't1': longer than max_chars=8": 40,
                                                                               "template 't2': longer than max_chars=8": 40}


def test_bad_records_are_counted_or_stop(tmp_path):
    m = _setup(tmp_path)
    with open(tmp_path / "a.jsonl", "a") as fh:
        fh.write('{"txt": "no text field", "label": 0}\n["not", "an object"]\nnot json\n')
    rep = build_mixture(load_mixture(m), log=lambda *_: None).report["tasks"]["a"]
    assert rep["records"] == 33 and rep["usable"] == 30 and sum(rep["skipped"].values()) == 2  # 2 templates × 1 record
    assert sum(rep["dropped_records"].values()) == 2  # not an object; not JSON
    with pytest.raises(Exception, match="on_error"):
        build_mixture(load_mixture(m, ["on_error=stop"]), log=lambda *_: None)


@pytest.mark.parametrize("fmt", ["prompt_completion", "messages"])
def test_written_file_is_read_by_the_training_loader(tmp_path, fmt):
    m = _setup(tmp_path)
    result = build_mixture(load_mixture(m, [f"output_format={fmt}"]), log=lambda *_: None)
    data, report = write_mixture(result, tmp_path / "out" / "mix.jsonl", fmt)
    rows = [json.loads(l) for l in data.read_text().splitlines()]
    assert len(rows) == 40 and {"task", "dataset", "cluster", "template", "shots"} <= set(rows[0])
    assert json.loads(report.read_text())["total"] == 40 and report.name == "mix.jsonl.report.json"
    convs, rep = load_conversations(DataConfig(files=[str(data)]), log=lambda *_: None)
    assert len(convs) == 40 and rep.files[0]["format"] == fmt and not rep.skipped
    assert convs[0].messages[-1].role == "assistant" and convs[0].messages[-1].content in ("no", "yes")
