"""dianjing report's page rendered by a real browser (headless Chromium): the screenshot is not blank.
Skipped where no chromium binary is on PATH (CI may have none)."""

import shutil
import subprocess

import pytest

from dianjing.eval.report import write_report
from tests.unit.eval.test_report import make_run

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(BROWSER is None, reason="no chromium or chromium-browser on PATH to render the page")
def test_the_page_renders_with_curves(tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="pillow is needed to read the screenshot")
    a, b = make_run(tmp_path, "run-a", steps=20), make_run(tmp_path, "run-b", steps=20, loss0=3.0)
    page = write_report([str(a), str(b)], tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    proc = subprocess.run([BROWSER, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                           "--window-size=1200,2000", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 2000)
    counts = img.getcolors(maxcolors=1200 * 2000)  # [(count, (r, g, b)), …]
    total = sum(n for n, _ in counts)
    non_white = sum(n for n, c in counts if sum(c) < 720)
    assert non_white > 0.01 * total, f"only {non_white} non-white pixels: a blank page?"
    assert len(counts) > 50, f"{len(counts)} colours: no text or curves rendered?"
    blue = sum(n for n, (r, g, b_) in counts if b_ > 150 and r < 80 and g < 160)  # run-a's curves (#1f77b4)
    red = sum(n for n, (r, g, b_) in counts if r > 180 and g < 80 and b_ < 80)  # run-b's curves (#d62728)
    assert blue > 100 and red > 100, (blue, red)
