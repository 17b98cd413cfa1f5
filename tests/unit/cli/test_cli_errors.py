"""The CLI's error paths: exit code 2 and a short message on stderr that names the cause and the
fix, never a traceback. Each case fails before any model is loaded, so no model is needed."""

import json

import pytest

from dianjing.cli import main


def _fails(capsys, argv: list[str], *needles: str) -> str:
    """Run `dianjing ARGV`, expect code 2 and one error (its message, then at most a fix line) on stderr."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("error: ")
    assert len(lines) <= 3, err  # the message, its fix (config errors: the key on a line of its own)
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_chat_needs_a_target_or_a_url(capsys):
    _fails(capsys, ["chat"], "give either RUN_OR_MODEL or --url URL", "fix: dianjing chat runs/NAME")


def test_chat_model_and_api_key_need_url(capsys, tmp_path):
    _fails(capsys, ["chat", tmp_path, "--model", "alpha"], "--model and --api-key go with --url", "fix: add --url")


def test_chat_url_with_nothing_listening(capsys):
    # port 9 (discard) on loopback: nothing listens there, so the connection is refused at once
    _fails(capsys, ["chat", "--url", "http://127.0.0.1:9/v1", "--prompt", "hi"],
           "cannot reach http://127.0.0.1:9/v1/models", "fix: check --url", "dianjing serve RUN")


def test_validate_missing_data_file(capsys, tmp_path):
    _fails(capsys, ["validate", "--data", tmp_path / "nope.jsonl"],
           "nope.jsonl does not exist", "fix: check data.files")


def _classify_file(tmp_path, bad: dict | None = None):
    rows = [{"text": f"good {i}", "label": "pos"} for i in range(6)] + [{"text": f"bad {i}", "label": "neg"}
                                                                         for i in range(6)]
    if bad is not None:
        rows.insert(3, bad)
    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def test_validate_task_classify_reads_specialist_data(capsys, tmp_path):
    """--task is honoured: the file is read as classification data, not sniffed as a chat format."""
    assert main(["validate", "--task", "classify", "--data", str(_classify_file(tmp_path)), "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "task classify: 12 training examples" in out and "labels 2: neg 6, pos 6" in out
    assert "text: good 0" in out and "label: pos" in out


def test_validate_task_classify_names_a_bad_record(capsys, tmp_path):
    f = _classify_file(tmp_path, bad={"text": "no label here"})
    _fails(capsys, ["validate", "--task", "classify", "--data", f],
           "c.jsonl:4", "missing label", "fix:", "data.on_error=skip")


def test_validate_task_classify_counts_skipped_records(capsys, tmp_path):
    f = _classify_file(tmp_path, bad={"text": "no label here"})
    assert main(["validate", "--task", "classify", "--data", str(f), "--set", "data.on_error=skip",
                 "--show", "0"]) == 0
    out = capsys.readouterr().out
    assert f"rejected 1: missing label ({f}:4)" in out and "12 training examples" in out


def test_train_unknown_set_key(capsys):
    _fails(capsys, ["train", "--set", "train.learnig_rate=1"], "unknown key 'train.learnig_rate'")


def test_eval_needs_data_or_mixture(capsys, tmp_path):
    _fails(capsys, ["eval", tmp_path], "nothing to score", "--data FILE", "--mixture M.yaml --held-out")


def test_predict_on_a_folder_that_is_not_a_run(capsys, tmp_path):
    f = _classify_file(tmp_path)
    _fails(capsys, ["predict", tmp_path / "empty", f], "`dianjing predict` takes a specialist run",
           "not a dianjing run folder", "fix: pass a folder printed by `dianjing train`")


def test_export_into_a_non_empty_folder(capsys, tmp_path):
    run = tmp_path / "run"  # looks like a finished chat run: export checks --out before loading anything
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"method": "lora"}))
    (run / "template.json").write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails(capsys, ["export", run, "--out", out], "exists and is not empty", "fix: choose an empty or new --out")
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("argv", [["validate", "--task", "nope"], ["serve", "x", "--precision", "fp16"]])
def test_choices_come_from_the_config(argv, capsys):
    """argparse refuses a value the config's Literal does not allow (code 2, its usage line)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
