"""`dianjing report RUN [RUN …] --out report.html`: one self-contained HTML page about one or more runs.

Read from each run folder (run_folder.py): metrics.jsonl (train and held-out loss, learning rate, gradient
norm, throughput), summary.json (wall time, tokens, device, MFU, peak memory), run.json, config.yaml,
RUN/eval/*.json + .jsonl (`dianjing eval`), judge results (result.json, under RUN/eval/ or given with
--judge), and a continual run's results.json (lifelong/results.py). Plots are inline SVG drawn here;
the page has no script and loads nothing. Every piece of text from the files is escaped.
Example generations of several runs are set side by side, matched by prompt within the same data file.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path

from dianjing.errors import DianjingError

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 260, 64, 16, 28, 40
SUMMARY_KEYS = (("steps", "steps"), ("tokens", "tokens"), ("supervised_tokens", "supervised tokens"),
                ("wall_time_s", "wall time (s)"), ("device_name", "device"), ("device", "device kind"),
                ("processes", "processes"), ("mfu", "MFU"), ("peak_device_memory_mb", "peak memory (MB)"),
                ("estimated_flops", "training FLOPs"))
SCORE_KEYS = (("exact_match", "EM"), ("f1", "F1"), ("contains", "contains"), ("rouge_l", "ROUGE-L"),
              ("accuracy", "acc (LL)"), ("accuracy_norm", "acc (LL/tok)"), ("perplexity", "ppl"))
CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#a33}.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}pre{white-space:pre-wrap;margin:0;max-width:60ch}
details pre{max-width:none;background:#f8f8f8;padding:8px}.gen td{max-width:420px}"""


# --- reading ------------------------------------------------------------------------------------------
def _json(path: Path, notes: list[str]):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"{path.name}: could not be read ({e})")
        return None


def read_metrics(path: Path, notes: list[str]) -> list[dict]:
    """metrics.jsonl's records; unreadable lines are counted in `notes`, not fatal."""
    if not path.is_file():
        notes.append("no metrics.jsonl: no curves for this run")
        return []
    recs, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            recs.append(rec)
    if bad:
        notes.append(f"metrics.jsonl: {bad} unreadable lines skipped (a killed run's last line?)")
    return recs


def read_evals(folder: Path, notes: list[str]) -> list[dict]:
    """RUN/eval/<stem>.json results of `dianjing eval`, each with its generations (the .jsonl beside it)."""
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        res = _json(p, notes)
        if not isinstance(res, dict) or "scores" not in res:
            continue  # cost.json and other files
        rows, gens = [], p.with_suffix(".jsonl")
        if gens.is_file():
            for line in gens.read_text(encoding="utf-8").splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
        out.append({"name": p.stem, "result": res, "rows": rows})
    return out


def read_judge(folder: Path, notes: list[str]) -> dict | None:
    res = _json(folder / "result.json", notes)
    return {"name": str(folder), "result": res} if isinstance(res, dict) else None


def read_run(path: str | Path) -> dict:
    """Everything the page shows about one run folder; what is missing is said in 'notes'."""
    from dianjing.run_folder import CONTINUAL, DESCRIBE, RunFolder

    p = Path(path)
    if not p.is_dir():
        raise DianjingError(f"{p} is not a folder", fix="pass run folders printed by `dianjing train`")
    rf, notes = RunFolder(p), []
    try:
        kind = rf.kind()
    except DianjingError as e:
        kind, _ = "damaged", notes.append(e.message)
    run = {"path": str(p), "name": p.name or str(p), "kind": DESCRIBE.get(kind, kind), "notes": notes,
           "info": _json(rf.info_path, notes) if rf.info_path.is_file() else None,
           "summary": _json(rf.summary_path, notes) if rf.summary_path.is_file() else None,
           "config": rf.config.read_text(encoding="utf-8") if rf.config.is_file() else None,
           "lifelong": _json(p / "results.json", notes) if (p / "results.json").is_file() else None}
    if kind == CONTINUAL:
        run["metrics"] = continual_metrics(p, notes)
    else:
        run["metrics"] = read_metrics(rf.metrics, notes)
    run["evals"] = read_evals(p / "eval", notes)
    run["judges"] = [j for d in sorted((p / "eval").glob("*/result.json")) if (j := read_judge(d.parent, notes))]
    if run["summary"] is None and kind != CONTINUAL:
        notes.append("no summary.json: the run has not finished (or was killed)")
    return run


def continual_metrics(p: Path, notes: list[str]) -> list[dict]:
    """The stages' metrics one after another, steps counted on from the stage before."""
    out, offset = [], 0
    stages = sorted(d for d in (p / "stages").glob("*") if d.is_dir())
    for d in stages:
        recs = read_metrics(d / "metrics.jsonl", [])
        out += [{**r, "step": r["step"] + offset, "stage": d.name} for r in recs]
        offset = max([offset] + [r["step"] for r in out])
    if not out:
        notes.append("no stage has a metrics.jsonl: no curves for this run")
    return out


# --- SVG ----------------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    return f"{v:.2e}" if a < 1e-3 or a >= 1e7 else f"{v:.6g}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(series: list[tuple[str, list[tuple[float, float]]]], title: str, xlabel: str = "step",
               ylabel: str = "") -> str:
    """An SVG line chart: one polyline (and its points, when few) per (label, points) series."""
    series = [(lab, [(x, y) for x, y in pts if y is not None and math.isfinite(y)]) for lab, pts in series]
    series = [(lab, pts) for lab, pts in series if pts]
    if not series:
        return ""
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    sx = lambda x: PAD_L + (x - x0) / (x1 - x0) * pw  # noqa: E731
    sy = lambda y: PAD_T + ph - (y - y0) / (y1 - y0) * ph  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>',
             f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>',
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{PAD_L}" x2="{PAD_L + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>'
                     f'<text x="{PAD_L - 4}" y="{sy(t) + 4:.1f}" text-anchor="end" font-size="10">{_fmt(t)}</text>')
    for t in _ticks(x0, x1):
        parts.append(f'<text x="{sx(t):.1f}" y="{PAD_T + ph + 14}" text-anchor="middle" font-size="10">'
                     f'{_fmt(t)}</text>')
    parts.append(f'<text x="{PAD_L + pw / 2}" y="{H - 6}" text-anchor="middle" font-size="11">{escape(xlabel)}</text>')
    if ylabel:
        parts.append(f'<text x="12" y="{PAD_T + ph / 2}" font-size="11" text-anchor="middle" '
                     f'transform="rotate(-90 12 {PAD_T + ph / 2})">{escape(ylabel)}</text>')
    for i, (lab, pts) in enumerate(series):
        c = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline class="series" data-label="{escape(lab)}" fill="none" stroke="{c}" '
                     f'stroke-width="1.8" points="{coords}"/>')
        if len(pts) <= 60:
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{c}"/>' for x, y in pts]
        ly = PAD_T + 12 + 14 * i
        parts.append(f'<rect x="{PAD_L + pw - 150}" y="{ly - 8}" width="10" height="10" fill="{c}"/>'
                     f'<text x="{PAD_L + pw - 136}" y="{ly + 1}" font-size="11">{escape(lab[:24])}</text>')
    parts.append("</svg>")
    return "".join(parts)


CURVES = (("loss", "training loss", "loss"), ("eval_loss", "held-out loss", "loss"),
          ("lr", "learning rate", "lr"), ("grad_norm", "gradient norm", "norm"),
          ("tokens_per_s", "throughput", "tokens/s"))


def curves(runs: list[dict]) -> str:
    """One chart per metric, every run a line in it; extra eval_* scores and memory where logged."""
    keys = list(CURVES)
    seen = {k for r in runs for rec in r["metrics"] for k in rec}
    extra = sorted(k for k in seen if (k.startswith("eval_") and k != "eval_loss") or "memory" in k)
    keys += [(k, k.replace("_", " "), "") for k in extra]
    charts = []
    for key, title, ylabel in keys:
        series = [(r["name"], [(rec["step"], rec[key]) for rec in r["metrics"]
                               if isinstance(rec.get(key), (int, float))]) for r in runs]
        svg = line_chart(series, title, "step", ylabel)
        if svg:
            charts.append(f'<figure data-metric="{escape(key)}">{svg}</figure>')
    return f'<div class="charts">{"".join(charts)}</div>' if charts else '<p class="note">no metrics to plot</p>'


# --- HTML pieces --------------------------------------------------------------------------------------
def _cell(v) -> str:
    if isinstance(v, bool) or v is None:
        return f"<td>{'–' if v is None else escape(str(v))}</td>"
    if isinstance(v, (int, float)):
        return f'<td class="num">{escape(_fmt(v) if isinstance(v, float) else str(v))}</td>'
    if isinstance(v, (dict, list)):
        return f"<td>{escape(json.dumps(v, ensure_ascii=False))}</td>"
    return f"<td>{escape(str(v))}</td>"


def table(head: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{escape(str(x))}</th>" for x in head)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def cost_table(runs: list[dict]) -> str:
    used = [(k, h) for k, h in SUMMARY_KEYS if any((r["summary"] or {}).get(k) is not None for r in runs)]
    if not used:
        return '<p class="note">no run has a summary.json</p>'
    rows = []
    for r in runs:
        s = r["summary"] or {}
        rows.append([r["name"], *(s.get(k) for k, _ in used)])
    return table(["run", *(h for _, h in used)], rows)


def eval_tables(runs: list[dict]) -> str:
    rows = [(r["name"], e["result"]) for r in runs for e in r["evals"]]
    if not rows:
        return '<p class="note">no `dianjing eval` results in the runs\' eval/ folders</p>'
    used = [(k, h) for k, h in SCORE_KEYS if any(k in res.get("scores", {}) for _, res in rows)]
    out = []
    for name, res in rows:
        s = res.get("scores", {})
        out.append([name, res.get("data"), res.get("metric"), s.get("n"),
                    *(s.get(k) for k, _ in used)])
        for cat, cs in (res.get("by_category") or {}).items():
            out.append(["", f"  · {cat}", "", cs.get("n"), *(cs.get(k) for k, _ in used)])
    return (table(["run", "data", "headline metric", "n", *(h for _, h in used)], out)
            + "<p>scores are percentages; ppl is the references' perplexity</p>")


def judge_section(judges: list[dict]) -> str:
    parts = []
    for j in judges:
        res, summ = j["result"], j["result"].get("results") or {}
        sides = res.get("sides") or {}
        who = "; ".join(f"{k}: {v.get('source')}" for k, v in sides.items() if isinstance(v, dict))
        parts.append(f"<h3>{escape(j['name'])}</h3><p>{escape(str(res.get('mode')))} · judge "
                     f"{escape(str((res.get('judge') or {}).get('model')))} · {escape(who)}</p>")
        if res.get("mode") == "pairwise":
            rows = [["all", summ.get("n"), summ.get("wins"), summ.get("ties"), summ.get("losses"),
                     summ.get("win_rate"), summ.get("ci")]]
            rows += [[c, s.get("n"), s.get("wins"), s.get("ties"), s.get("losses"), s.get("win_rate"), s.get("ci")]
                     for c, s in (summ.get("by_category") or {}).items()]
            parts.append(table(["category", "n", "a wins", "ties", "b wins", "a's win rate", "CI"], rows))
            parts.append(f"<p>agreement of the two orders: {escape(str(summ.get('agreement')))}; "
                         f"unjudged: {escape(str(summ.get('unjudged')))}</p>")
        else:
            rows = [[side, s.get("n"), s.get("mean"), s.get("ci"), s.get("unjudged")]
                    for side, s in summ.items() if isinstance(s, dict)]
            parts.append(table(["side", "n", "mean rating (1–10)", "CI", "unjudged"], rows))
        for w in res.get("warnings") or []:
            parts.append(f'<p class="note">{escape(str(w))}</p>')
    return "".join(parts)


def _heat(v) -> str:
    if not isinstance(v, (int, float)):
        return "<td>–</td>"
    g = int(255 - 1.6 * max(0.0, min(100.0, v)))
    return f'<td class="num" style="background:rgb({g},{min(255, g + 60)},255)">{v:.1f}</td>'


def lifelong_section(run: dict) -> str:
    res = run["lifelong"]
    if not isinstance(res, dict) or "matrix" not in res:
        return ""
    tasks, metrics = res.get("tasks", []), res.get("metrics", {})
    head = "".join("<th>" + escape(f"{t} ({metrics.get(t, '')})") + "</th>" for t in tasks)
    body = "".join(f"<tr><th>{escape(str(name))}</th>" + "".join(_heat(v) for v in row) + "</tr>"
                   for name, row in zip(res.get("rows", []), res["matrix"]))
    figs = [f"strategy: {res.get('strategy')}", f"average at the end: {res.get('average')}"]
    if res.get("bwt") is not None:
        figs.append(f"average forgetting: {res.get('average_forgetting')}; backward transfer (BWT): {res['bwt']}")
    return (f"<h3>{escape(run['name'])}: accuracy matrix (score on each task after each stage)</h3>"
            f"<table><tr><th>after</th>{head}</tr>{body}</table>"
            + "".join(f"<p>{escape(str(f))}</p>" for f in figs))


def _prompt_text(prompt) -> str:
    if isinstance(prompt, list):
        return "\n\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" if isinstance(m, dict) else str(m)
                           for m in prompt)
    return str(prompt)


def generations(runs: list[dict], limit: int = 8) -> str:
    """Per data file, the prompts every run answered (or as many as did), each run's answer in its column."""
    by_data: dict[str, dict[str, dict[str, dict]]] = {}
    for r in runs:
        for e in r["evals"]:
            data = str(e["result"].get("data", e["name"]))
            rows = by_data.setdefault(data, {}).setdefault(r["name"], {})
            for row in e["rows"]:
                if row.get("answer") is not None:
                    rows.setdefault(json.dumps(row.get("prompt"), ensure_ascii=False, sort_keys=True), row)
    parts = []
    for data, per_run in by_data.items():
        names = list(per_run)
        keys = [k for k in next(iter(per_run.values()))]
        keys = sorted(keys, key=lambda k: -sum(k in per_run[n] for n in names))[:limit]
        if not keys:
            continue
        head = "".join(f"<th>{escape(n)}</th>" for n in names)
        body = []
        for k in keys:
            first = next(per_run[n][k] for n in names if k in per_run[n])
            cells = "".join(f"<td><pre>{escape(str(per_run[n][k].get('answer')))}</pre></td>" if k in per_run[n]
                            else "<td>–</td>" for n in names)
            body.append(f"<tr><td><pre>{escape(_prompt_text(first.get('prompt')))}</pre></td>"
                        f"<td><pre>{escape(str(first.get('reference', '')))}</pre></td>{cells}</tr>")
        parts.append(f"<h3>{escape(data)}</h3><table class=\"gen\"><tr><th>prompt</th><th>reference</th>{head}</tr>"
                     + "".join(body) + "</table>")
    return "".join(parts) or '<p class="note">no generations (RUN/eval/*.jsonl) to show</p>'


def run_details(run: dict) -> str:
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in run["notes"])
    info = (table(["key", "value"], [[k, v] for k, v in run["info"].items()])
            if isinstance(run["info"], dict) else "")
    cfg = (f"<details><summary>config.yaml</summary><pre>{escape(run['config'])}</pre></details>"
           if run["config"] else "")
    return (f"<h3>{escape(run['name'])}</h3><p>{escape(run['path'])} — {escape(run['kind'])}</p>"
            f"{notes}{info}{cfg}")


# --- the page -----------------------------------------------------------------------------------------
def build_report(runs: list[dict], judges: list[dict] | None = None, *, examples: int = 8,
                 title: str = "dianjing report") -> str:
    judges, seen = [*(judges or []), *(j for r in runs for j in r["judges"])], set()
    judges = [j for j in judges if not (Path(j["name"]).resolve() in seen or seen.add(Path(j["name"]).resolve()))]
    lifelong = "".join(lifelong_section(r) for r in runs)
    sections = [("Runs", "".join(run_details(r) for r in runs)),
                ("Curves", curves(runs)),
                ("Cost: time, tokens, device, memory", cost_table(runs)),
                ("Evaluation", eval_tables(runs))]
    if judges:
        sections.append(("Judge results", judge_section(judges)))
    if lifelong:
        sections.append(("Continual learning", lifelong))
    sections.append(("Example generations", generations(runs, examples)))
    body = "".join(f"<h2>{escape(h)}</h2>{s}" for h, s in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
            f"<p>{escape(', '.join(r['name'] for r in runs))}</p>{body}</body></html>\n")


def write_report(runs: list[str], out: str | Path, *, judge: list[str] | None = None, examples: int = 8,
                 title: str = "dianjing report") -> Path:
    """Read the runs (and judge folders), write the page to `out`; returns its path."""
    if not runs:
        raise DianjingError("no run folder given", fix="dianjing report RUN [RUN …] --out report.html")
    read = [read_run(r) for r in runs]
    judges = []
    for d in judge or []:
        if not (Path(d) / "result.json").is_file():
            raise DianjingError(f"--judge {d}: no result.json there",
                                fix="pass the folder `dianjing judge` wrote (it prints it)")
        notes: list[str] = []
        j = read_judge(Path(d), notes)
        if j is None:
            raise DianjingError(f"--judge {d}: {'; '.join(notes)}", fix="run `dianjing judge` again to rewrite it")
        judges.append(j)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(read, judges, examples=examples, title=title), encoding="utf-8")
    return out
