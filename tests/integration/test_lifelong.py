"""Continual runs end to end on a tiny model: LAMOL's replay keeps an earlier task that sequential
fine-tuning forgets, every strategy runs through the one loop, a run killed in its third task resumes
there with the pseudo-examples it had generated and ends as an uninterrupted run, bad sequence files
fail before any training."""

import json

import pytest
import torch
from safetensors.torch import load_file

from dianjing.lifelong import driver, pseudo
from dianjing.run_folder import CHAT_FULL, CONTINUAL, RunFolder
from dianjing.train import loop
from tests.helpers import colour_sequence, run_cli, write_sequence

QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def two_runs(tiny_llama, tmp_path_factory):
    """The same two tasks learned sequentially and with LAMOL (full fine-tuning, fp32)."""
    out = {}
    for strategy in ("sequential", "lamol"):
        folder = tmp_path_factory.mktemp(strategy)
        out[strategy] = driver.train_sequence(colour_sequence(folder, tiny_llama, strategy), None,
                                              str(folder / "run"), **QUIET)
    return out


def test_lamol_keeps_the_first_task_that_sequential_forgets(two_runs):
    (_, seq), (_, lamol) = two_runs["sequential"], two_runs["lamol"]
    assert seq["matrix"][0][0] == lamol["matrix"][0][0] == 100.0  # both learned task 1
    assert seq["final"]["t2"] == lamol["final"]["t2"] == 100.0  # and task 2
    assert seq["final"]["t1"] == 0.0  # sequential: task 2's answers only (they share none with task 1)
    assert lamol["final"]["t1"] >= seq["final"]["t1"] + 25  # the replayed pseudo-examples keep task 1
    assert lamol["forgetting"]["t1"] < seq["forgetting"]["t1"] and lamol["bwt"] > seq["bwt"]


def test_the_run_folder_holds_stages_replay_scores_and_results(two_runs):
    run_dir, res = two_runs["lamol"]
    assert RunFolder(run_dir).kind() == CONTINUAL
    assert json.loads((run_dir / "results.json").read_text()) == res
    assert (run_dir / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 2: t2 |" in (run_dir / "results.md").read_text()
    s1, s2 = run_dir / "stages" / "01-t1", run_dir / "stages" / "02-t2"
    for stage in (s1, s2):
        assert RunFolder(stage).kind() == CHAT_FULL  # each stage is a chat run: chat, serve, export take it
        assert (stage / "eval.json").exists() and (stage / "checkpoints").is_dir()
    assert not pseudo.exists(s1)
    report = json.loads((s2 / "replay.json").read_text())
    lines = [json.loads(l) for l in (s2 / "replay.jsonl").read_text().splitlines()]
    assert report["kind"] == "pseudo" and report["requested"] == 16 == len(lines)  # ⌈2.0 · 8⌉
    assert report["kept"] == sum(r["kept"] for r in lines) > 0
    assert sum(report["dropped"].values()) == report["generated"] - report["kept"]
    kept = [r for r in lines if r["kept"]]
    assert all(r["text"].count("__ans__") == 1 and r["answer"] in r["text"] for r in kept)
    summary = json.loads((s2 / "summary.json").read_text())
    assert summary["data"]["replayed"] == report["kept"] and summary["data"]["tasks"] == {"t2": 8}
    preds = [json.loads(l) for l in (s2 / "eval" / "t1.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and {"prediction", "answers", "score"} <= set(preds[0])


@pytest.mark.parametrize("strategy", ["replay", "multitask"])
def test_replay_and_multitask_run_through_the_loop(tiny_llama, tmp_path, strategy):
    run_dir, res = driver.train_sequence(colour_sequence(tmp_path, tiny_llama, strategy, epochs=4), None,
                                         str(tmp_path / "run"), **QUIET)
    if strategy == "multitask":
        assert res["rows"] == ["all (multitask)"] and res["bwt"] is None
        assert sorted(p.name for p in (run_dir / "stages").iterdir()) == ["01-multitask"]
        assert json.loads((run_dir / "stages/01-multitask/summary.json").read_text())["data"]["tasks"] == \
            {"t1": 8, "t2": 8}
    else:
        report = json.loads((run_dir / "stages/02-t2/replay.json").read_text())
        assert report["kind"] == "real" and report["kept"] == report["requested"] == 16  # ⌈2.0 · 8⌉
        lines = [json.loads(l) for l in (run_dir / "stages/02-t2/replay.jsonl").read_text().splitlines()]
        assert sorted(r["where"] for r in lines) == sorted(2 * [l["where"] for l in lines[:8]])  # each twice
        assert len(res["matrix"]) == 2 and res["bwt"] is not None


def test_lora_stages_start_from_the_previous_stages_adapter(tiny_llama, tmp_path):
    seq = colour_sequence(tmp_path, tiny_llama, "lamol", epochs=2)
    run_dir, _ = driver.train_sequence(seq, ["adapter.method=lora", "lamol.gamma=0.5"], str(tmp_path / "run"),
                                       **QUIET)
    first = load_file(str(run_dir / "stages/01-t1/adapter/adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in first.items() if "lora_B" in k)
    stage2 = run_dir / "stages/02-t2"
    cfg = loop.load_config(stage2 / "config.yaml")
    trainer = loop.Trainer(cfg, stage2, **QUIET)  # the stage's Setup, before any step: stage 1's weights
    state = {k.replace(".default", ""): v for k, v in trainer.model.state_dict().items() if "lora_" in k}
    for k, v in first.items():
        assert torch.equal(state[k], v), k


def test_a_run_killed_in_task_3_resumes_there_as_if_uninterrupted(tiny_llama, tmp_path, monkeypatch):
    a = tmp_path / "a"
    a.mkdir()
    seq = colour_sequence(a, tiny_llama, "lamol", tasks=3, epochs=8, save_every=5)
    run_a, res_a = driver.train_sequence(seq, None, str(tmp_path / "run-a"), **QUIET)

    real = loop.Trainer.micro_batch

    def killed_in_stage_3(self, k):
        if self.run_dir.name == "03-t3" and k == 12:  # step 13, after its step-10 checkpoint
            raise KeyboardInterrupt
        return real(self, k)

    monkeypatch.setattr(loop.Trainer, "micro_batch", killed_in_stage_3)
    with pytest.raises(KeyboardInterrupt):
        driver.train_sequence(seq, None, str(tmp_path / "run-b"), **QUIET)
    monkeypatch.setattr(loop.Trainer, "micro_batch", real)
    run_b = tmp_path / "run-b"
    stage3 = run_b / "stages/03-t3"
    assert pseudo.exists(stage3) and not (run_b / "results.json").exists()
    replay_before = (stage3 / "replay.jsonl").read_text()

    def no_generation(*_a, **_k):
        raise AssertionError("the stored pseudo-examples must be reused, not generated again")

    monkeypatch.setattr(pseudo, "generate", no_generation)
    said = []
    _, res_b = driver.resume_sequence(run_b, log=said.append)
    assert any(s.startswith("stage 1/3") and s.endswith("done") for s in said)
    assert any("resumed from step-00000010" in s for s in said)
    assert (stage3 / "replay.jsonl").read_text() == replay_before == \
        (run_a / "stages/03-t3/replay.jsonl").read_text()
    assert res_b == res_a
    wa = load_file(str(run_a / "stages/03-t3/model/model.safetensors"))
    wb = load_file(str(stage3 / "model/model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_cli_refuses_a_bad_sequence_file_before_training(tmp_path, tiny_llama):
    seq = colour_sequence(tmp_path, tiny_llama)
    tree = __import__("yaml").safe_load(seq.read_text())
    tree["tasks"][1]["epochs"] = 3
    write_sequence(seq, tree)
    r = run_cli("train", "--continual", seq, "-o", tmp_path / "run", timeout=120)
    assert r.returncode == 2 and "unknown key 'tasks[1] (t2).epochs'" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_cli_trains_a_sequence_and_resume_of_a_stage_points_at_the_run(tmp_path, tiny_llama, capsys):
    from dianjing.cli import main

    seq = colour_sequence(tmp_path, tiny_llama, "sequential", epochs=1)
    assert main(["train", "--continual", str(seq), "-o", str(tmp_path / "run"), "--set", "train.max_steps=1"]) == 0
    err = capsys.readouterr().err
    assert "| after | t1 (accuracy) | t2 (accuracy) |" in err and (tmp_path / "run" / "results.json").exists()
    assert main(["train", "--resume", str(tmp_path / "run" / "stages" / "01-t1")]) == 2
    assert f"--resume {tmp_path / 'run'}" in capsys.readouterr().err
    assert main(["train", "--continual", str(seq), "--data", "x.jsonl"]) == 2
    assert "--data cannot be used with a continual run" in capsys.readouterr().err


def test_bad_task_data_stops_before_the_run_folder_exists(tmp_path, tiny_llama):
    from dianjing.errors import DianjingError

    seq = colour_sequence(tmp_path, tiny_llama)
    (tmp_path / "t2.jsonl").write_text('{"question": "b 1", "answer": "green"}\n{"question": "b 2"}\n')
    with pytest.raises(DianjingError) as e:
        driver.train_sequence(seq, None, str(tmp_path / "run"), **QUIET)
    assert "task 't2' (tasks[1])" in str(e.value) and "t2.jsonl:2" in str(e.value) and "'answer'" in str(e.value)
    assert not (tmp_path / "run").exists()
