"""The run folder: what `dianjing train` writes and every other command reads.

    RUN/
      config.yaml          the run's config, with every 'auto' resolved (so --resume computes the same)
      metrics.jsonl        one JSON object per logged step and per evaluation (plot-ready)
      checkpoints/         step-00000038/ …: resumable state (train/checkpoint.py)
      run.json             what kind of run: base_model, model_name, method, dtype (and task for specialists)
      summary.json         the finished run's figures: steps, tokens, time, memory, data counts
      tokenizer/           the tokenizer the run trained with
      template.json        chat runs: the chat template, rendered exactly as in training
      adapter/             chat runs with an adapter: PEFT's adapter_config.json + adapter_model.safetensors
      model/               chat runs with full fine-tuning: a Hugging Face model folder
      specialist/          specialist runs: backbone (+ adapter) and head, specialist.json

run.json and summary.json are written last, so a folder with a config but without them is a
run that has not finished (or was killed): `dianjing train --resume` continues it.

A continual run (`dianjing train --continual`, lifelong/driver.py) is a folder with continual.yaml
whose stages/NN-task/ are run folders of this kind, one per task.

`RunFolder.kind` answers "what is this?" and `RunFolder.require` turns a wrong kind into an
error that says what the folder is and which command fits it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dianjing.errors import DianjingError

CHAT_ADAPTER, CHAT_FULL, SPECIALIST, UNFINISHED, NOT_A_RUN = (
    "chat-adapter", "chat-full", "specialist", "unfinished", "not-a-run")
CONTINUAL = "continual"  # `dianjing train --continual`: stages/NN-task/ are its runs (lifelong/driver.py)

# what each kind is, in words, and the commands that take it
DESCRIBE = {
    CHAT_ADAPTER: "a chat run (an adapter on a base model)",
    CHAT_FULL: "a chat run (a fully fine-tuned model)",
    SPECIALIST: "a specialist run (a backbone with a task head)",
    UNFINISHED: "a run that has not finished (no run.json yet)",
    CONTINUAL: "a continual run (one run folder per task in its stages/)",
    NOT_A_RUN: "not a dianjing run folder",
}
COMMANDS = {
    CHAT_ADAPTER: "dianjing chat {p} · dianjing serve {p} · dianjing export {p} --out DIR · "
                  "dianjing eval {p} --mixture M.yaml --held-out",
    CHAT_FULL: "dianjing chat {p} · dianjing serve {p} · dianjing export {p} --out DIR · "
               "dianjing eval {p} --mixture M.yaml --held-out",
    SPECIALIST: "dianjing eval {p} --data FILE · dianjing predict {p} FILE",
    UNFINISHED: "dianjing train --resume {p}",
    CONTINUAL: "dianjing chat {p}/stages/<stage> (each stage is a chat run) · dianjing train --resume {p} "
               "(if it has not finished)",
    NOT_A_RUN: "pass a folder printed by `dianjing train`",
}


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    # --- the parts --------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def specialist(self) -> Path:
        return self.path / "specialist"

    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def template_path(self) -> Path:
        return self.path / "template.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    # --- what is it? ------------------------------------------------------------------------------
    def kind(self) -> str:
        p = self.path
        if not p.is_dir():
            return NOT_A_RUN
        if (p / "continual.yaml").is_file():
            return CONTINUAL
        if self.info_path.exists():
            info = self.info()  # a damaged run.json is an error that says so, not "not a run"
            if info.get("task", "sft") != "sft" or self.specialist.exists():
                return SPECIALIST
            if self.template_path.exists():
                return CHAT_FULL if info.get("method") == "full" else CHAT_ADAPTER
            return NOT_A_RUN
        if (self.config.exists() or self.checkpoints.exists()) and not (p / "config.json").exists():
            return UNFINISHED  # (a Hugging Face model folder has a config.json, and may have either of these)
        return NOT_A_RUN

    def require(self, *kinds: str, command: str) -> str:
        """The folder's kind if it is one of `kinds`, else an error naming what it is and what fits it."""
        kind = self.kind()
        if kind in kinds:
            return kind
        raise DianjingError(f"`{command}` takes {' or '.join(DESCRIBE[k] for k in kinds)}; "
                            f"{self.path} is {DESCRIBE[kind]}", fix=COMMANDS[kind].format(p=self.path))

    # --- reading ----------------------------------------------------------------------------------
    def info(self) -> dict:
        return self._json(self.info_path)

    def summary(self) -> dict:
        return self._json(self.summary_path)

    def template(self):
        from dianjing.data.templates import ChatTemplate

        return ChatTemplate.from_json(self._json(self.template_path))

    def _json(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DianjingError(f"{path} is missing", fix=COMMANDS[self.kind_without_info()].format(p=self.path)) from None
        except ValueError as e:
            raise DianjingError(f"{path} is not valid JSON ({e})",
                                fix="the run folder is damaged; train again, or restore the file") from None

    def kind_without_info(self) -> str:
        return UNFINISHED if self.config.exists() or self.checkpoints.exists() else NOT_A_RUN

    # --- writing (train) --------------------------------------------------------------------------
    def write_info(self, info: dict) -> None:
        """run.json: base_model, model_name, method, dtype (and task, for specialists)."""
        self._write_json(self.info_path, info)

    def write_template(self, template) -> None:
        self._write_json(self.template_path, template.to_json(), indent=1)

    def write_summary(self, summary: dict) -> None:
        self._write_json(self.summary_path, summary, indent=1)

    @staticmethod
    def _write_json(path: Path, obj: dict, indent: int = 1) -> None:
        path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False), encoding="utf-8")


def is_chat_run(path: str | Path) -> bool:
    return RunFolder(path).kind() in (CHAT_ADAPTER, CHAT_FULL)
