"""--device on the commands that run a model (chat, serve, eval, predict, synth with a local teacher):
a device this machine lacks fails at once, exit code 2, naming --device, before anything is read or
loaded; a valid one reaches the library call unchanged."""

from __future__ import annotations

import pytest
import torch

from dianjing.cli import main
from dianjing.errors import DianjingError


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch):
    """Behave as this CPU-only machine does, whatever machine the tests run on."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _fails(capsys, argv, *needles) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ")
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _commands(tmp_path) -> dict[str, list]:
    nope = tmp_path / "does-not-exist"  # were it read, the error would say so instead
    return {"chat": ["chat", nope, "--prompt", "hi"],
            "serve": ["serve", nope, "--port", "0"],
            "eval": ["eval", nope, "--data", tmp_path / "d.jsonl"],
            "eval --held-out": ["eval", nope, "--mixture", tmp_path / "m.yaml", "--held-out"],
            "judge": ["judge", nope, "reference", "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "m",
                      "--out", tmp_path / "judged"],
            "predict": ["predict", nope, tmp_path / "d.jsonl"],
            "synth": ["synth", "--set", f"teacher.local_model={nope}", "--set", "teacher.terms_of_use=own model",
                      "--out", tmp_path / "synth.jsonl"]}


@pytest.mark.parametrize("command", ["chat", "serve", "eval", "eval --held-out", "predict", "synth", "judge"])
def test_a_gpu_this_machine_lacks_fails_first_naming_device(command, capsys, tmp_path):
    _fails(capsys, [*_commands(tmp_path)[command], "--device", "cuda"],
           "--device: cuda asked for, but this machine has", "fix: set model.device: auto (or cpu)")
    assert not any(tmp_path.iterdir())  # nothing was written (synth: no work folder)


@pytest.mark.parametrize("command", ["chat", "predict"])
def test_a_word_that_is_no_device(command, capsys, tmp_path):
    _fails(capsys, [*_commands(tmp_path)[command], "--device", "gpu"],
           "--device: 'gpu' is not a device", "fix: use auto, cpu, cuda, cuda:N or mps")


class Reached(DianjingError):
    pass


def _capture(monkeypatch, module, name) -> dict:
    """Replace `module.name` by a stub that records its keyword arguments and stops the command."""
    seen = {}

    def stub(*args, **kwargs):
        seen.update(kwargs)
        raise Reached("reached the library")

    monkeypatch.setattr(module, name, stub)
    return seen


def test_device_reaches_the_library(capsys, tmp_path, monkeypatch):
    import dianjing.eval.chat as chat_eval
    import dianjing.eval.judge as judge
    import dianjing.infer.load as load
    import dianjing.infer.models as models
    import dianjing.specialist.evaluate as ev

    cmds = _commands(tmp_path)
    specialist = tmp_path / "specialist-run"  # a specialist run goes to the specialist scorer, the rest to chat eval
    specialist.mkdir()
    (specialist / "run.json").write_text('{"task": "classify"}')
    for argv, module, name in ((cmds["chat"], load, "load_run"), (cmds["serve"], models, "load_models"),
                               (cmds["eval"], chat_eval, "evaluate_chat"),
                               (["eval", specialist, "--data", tmp_path / "d.jsonl"], ev, "evaluate"),
                               (cmds["predict"], ev, "predict"), (cmds["judge"], judge, "run_judge")):
        seen = _capture(monkeypatch, module, name)
        _fails(capsys, [*argv, "--device", "cpu"], "reached the library")
        assert seen["device"] == "cpu", argv
        seen = _capture(monkeypatch, module, name)
        _fails(capsys, argv, "reached the library")
        assert seen["device"] == "auto", argv  # the default


def test_synth_passes_device_to_the_local_teacher(capsys, tmp_path, monkeypatch):
    import dianjing.infer.load as load

    seen = _capture(monkeypatch, load, "load_run")
    # the teacher is loaded at the first request; the stub stops there and the stage reports the failure
    main([str(a) for a in [*_commands(tmp_path)["synth"], "--device", "cpu", "-n", "1"]])
    assert seen.get("device") == "cpu"


def test_device_with_a_server_is_refused(capsys, tmp_path):
    _fails(capsys, ["chat", "--url", "http://127.0.0.1:9/v1", "--device", "cpu", "--prompt", "hi"],
           "--device is for a local RUN_OR_MODEL", "dianjing serve RUN --device")
    _fails(capsys, ["synth", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m", "--set",
                    "teacher.terms_of_use=t", "--out", tmp_path / "s.jsonl", "--device", "cpu"],
           "--device is for a local teacher")


def test_synth_names_the_config_key_when_the_device_came_from_it(capsys, tmp_path):
    _fails(capsys, [*_commands(tmp_path)["synth"], "--set", "teacher.device=cuda:1"],
           "teacher.device: cuda:1 asked for")
