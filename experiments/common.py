"""What the experiment scripts share: a log line, one `dianjing` command run as a user types it, and the
removal of an earlier run folder. Each script puts this folder on sys.path and imports from here."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cli(args_: list[str], logfile: Path) -> float:
    """`python -m dianjing ARGS` from the project root, its output to `logfile` (and the tail to the screen on
    failure, then exit); the seconds it took."""
    cmd = [sys.executable, "-m", "dianjing", *args_]
    log("$ " + " ".join(cmd))
    logfile.parent.mkdir(parents=True, exist_ok=True)
    t = time.time()
    with logfile.open("w", encoding="utf-8") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        tail = logfile.read_text(encoding="utf-8", errors="replace")[-3000:]
        sys.exit(f"{tail}\n`{' '.join(cmd)}` failed (exit {r.returncode}); its whole output is in {logfile}")
    return time.time() - t


def fresh(folder: Path) -> None:
    """Remove an earlier run folder of the script (one with config.yaml), never anything else."""
    if folder.exists():
        if not (folder / "config.yaml").exists() and any(folder.iterdir()):
            sys.exit(f"{folder} exists and is not a run folder: move it away or choose another --work")
        shutil.rmtree(folder)
