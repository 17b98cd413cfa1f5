"""`dianjing synth` end to end against a real HTTP server on localhost that speaks the OpenAI API.

The fake teacher answers every prompt of the pipeline from a hash of the request body (so a
request asked twice gets the same answer), mixes in replies the filters must reject (near-
duplicates, "draw an image", too short, leading punctuation, garbage, empty outputs, output =
input, conflicting labels) and injects faults on first attempts: 429 with Retry-After, 500,
malformed bodies, dropped connections and replies slower than the timeout. It counts what it
served, so the tests can check retries, and that a request answered before a SIGKILL is not
sent again after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dianjing.cli import main
from dianjing.config import DataConfig
from dianjing.data.load import load_conversations

TERMS = "test teacher, no restrictions (fake server in the test suite)"
WORDS = ("river mountain budget recipe poem letter history planet engine market garden novel bridge "
         "contract school winter festival robot ocean library theory battery island village museum coffee "
         "language bicycle storm music habit friend doctor kitchen marathon violin desert forest harbor "
         "tax painting vaccine pigeon lantern tunnel glacier volcano satellite orchard").split()
VERBS = ("describe explain summarize compare suggest list rewrite translate evaluate outline plan "
         "argue estimate invent critique define predict").split()
ZH = "山河預算食譜詩信歷史行星引擎市場花園小說橋合約學校冬天節日機器人海洋圖書館理論電池島嶼村莊博物館咖啡語言腳踏車風暴音樂習慣朋友醫生廚房馬拉松小提琴沙漠森林港口稅鴿子燈籠隧道冰川火山衛星果園"


def body_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _content(body: dict) -> str:
    return body["messages"][-1]["content"] if "messages" in body else body["prompt"]


def _instruction(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.30:
        return "請" + "".join(rng.sample(ZH, rng.randrange(8, 16))) + "。"
    if r < 0.45:
        return f"Classify the {rng.choice(WORDS)} " + " ".join(rng.sample(WORDS, 4)) + " as good or bad."
    return rng.choice(VERBS).capitalize() + " " + " ".join(rng.sample(WORDS, rng.randrange(5, 9))) + "."


def answer(body: dict) -> tuple[str, str]:
    """The fake teacher's reply text and finish_reason, from the prompt kind and a hash of the body."""
    text, h = _content(body), body_hash(body)
    rng = random.Random(h)
    chat = "messages" in body
    if "example tasks. Write" in text:  # (1) new instructions
        if rng.random() < 0.08:
            return "I'm sorry, I cannot help with that.", "stop"
        first = int(re.search(r"numbered from (\d+)", text).group(1))
        n = int(re.search(r"Write (\d+) new tasks", text).group(1))
        examples = re.findall(r"^Task \d+: (.*)$", text, re.M)
        tasks = []
        for _ in range(n):
            r = rng.random()
            if r < 0.12 and examples:
                tasks.append(rng.choice(examples).rstrip(".。") + "!")  # a near-duplicate of an example
            elif r < 0.18:
                tasks.append(f"Draw an image of a {rng.choice(WORDS)}.")
            elif r < 0.23:
                tasks.append("Hi.")
            elif r < 0.30:
                tasks.append("- " + _instruction(rng))
            elif r < 0.34 and tasks:
                tasks.append(tasks[-1])  # the same task twice in one reply
            else:
                tasks.append(_instruction(rng))
        lines = [f"Task {first + i}: {t}" for i, t in enumerate(tasks)]
        finish = "length" if rng.random() < 0.1 else "stop"
        if finish == "length":
            lines[-1] = lines[-1][: len(lines[-1]) // 2]
        reply = "\n".join(lines)
        return (reply if chat else reply[len(f"Task {first}:"):]), finish
    if text.rstrip().endswith(("Answer with Yes or No only.", "Classification:")):  # classification check
        task = re.findall(r"^Task: (.*)$", text, re.M)[-1]
        if rng.random() < 0.05:
            return "Hmm, hard to say.", "stop"
        return ("Yes" if task.startswith("Classify") else "No"), "stop"
    if text.startswith("Write up to"):  # (2) input-first
        n = int(re.search(r"Write up to (\d+)", text).group(1))
        if rng.random() < 0.05:
            return "Sure! Here you go.", "stop"
        if rng.random() < 0.15:
            return "Input 1: <none>", "stop"
        inputs = [" ".join(rng.sample(WORDS, 5)) for _ in range(n)]
        if rng.random() < 0.25:
            inputs[-1] = inputs[0]  # a repeated input
        return "\n".join(f"Input {i}: {x}" for i, x in enumerate(inputs, 1)), "stop"
    if "is a classification task. First" in text:  # (2) output-first
        a, b = rng.sample(WORDS, 2), rng.sample(WORDS, 2)
        pairs = [("good", " ".join(a)), ("bad", " ".join(b))]
        if rng.random() < 0.3:
            pairs.append(("bad", " ".join(a)))  # the same input under two labels: a conflict
        return "\n".join(f"Label: {y}\nInput: {x}" for y, x in pairs), "stop"
    if "Separate the tasks with a line" in text:  # one-shot
        n = int(re.search(r"Write (\d+) varied tasks", text).group(1))
        blocks = []
        for _ in range(n):
            inst = _instruction(rng)
            blocks.append(f"###\nInstruction: {inst}\nInput: <none>\nOutput: " + " ".join(rng.sample(WORDS, 6)))
        if rng.random() < 0.2:
            blocks.append("###\nthis block lost its fields")
        return "\n".join(blocks), "stop"
    # (3) an output
    r = rng.random()
    inp = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    if r < 0.08:
        return "", "stop"
    if r < 0.14 and inp:
        return inp, "stop"
    return "Here is the answer: " + " ".join(rng.sample(WORDS, 7)) + ".", "stop"


class FakeTeacher:
    """A threaded HTTP server speaking /v1/chat/completions and /v1/completions."""

    def __init__(self, fault=None, delay: float = 0.0, slow_s: float = 1.0):
        self.fault = fault or (lambda h, attempt, body: None)
        self.delay, self.slow_s = delay, slow_s
        self.lock = threading.Lock()
        self.attempts: Counter = Counter()
        self.served: list[tuple[str, str]] = []  # (body hash, what happened), in order
        self.auth: list[str | None] = []
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, payload: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                h = body_hash(body)
                with teacher.lock:
                    teacher.attempts[h] += 1
                    attempt = teacher.attempts[h]
                    teacher.auth.append(self.headers.get("Authorization"))
                fault = teacher.fault(h, attempt, body)
                with teacher.lock:
                    teacher.served.append((h, fault or "ok"))
                if teacher.delay:
                    time.sleep(teacher.delay)
                try:
                    if fault == "429":
                        return self._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "0.05"})
                    if fault in ("500", "503"):
                        return self._send(int(fault), b'{"error": {"message": "overloaded"}}')
                    if fault == "401":
                        return self._send(401, b'{"error": {"message": "invalid api key"}}')
                    if fault == "garbage":
                        return self._send(200, b"<html>502 bad gateway</html>")
                    if fault == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if fault == "slow":
                        time.sleep(teacher.slow_s)
                    text, finish = answer(body)
                    chat = self.path.endswith("/chat/completions")
                    choice = ({"index": 0, "message": {"role": "assistant", "content": text}} if chat
                              else {"index": 0, "text": text})
                    choice["finish_reason"] = finish
                    usage = {"prompt_tokens": len(_content(body)) // 4, "completion_tokens": len(text) // 4}
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                    self._send(200, json.dumps({"id": f"cmpl-{h[:8]}", "object": "chat.completion",
                                                "model": body["model"], "choices": [choice],
                                                "usage": usage}).encode())
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def ok_hashes(self) -> Counter:
        with self.lock:
            return Counter(h for h, what in self.served if what in ("ok",))

    def faults(self) -> Counter:
        with self.lock:
            return Counter(what for _, what in self.served if what != "ok")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def first_attempt_faults(h: str, attempt: int, body: dict) -> str | None:
    """A deterministic mix of faults, on first attempts only (the retry then succeeds)."""
    if attempt > 1:
        return None
    return {0: "429", 1: "500", 2: "garbage", 3: "drop"}.get(int(h[:4], 16) % 9)


@pytest.fixture
def teacher():
    servers = []

    def start(**kw) -> FakeTeacher:
        servers.append(FakeTeacher(**kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _args(url: str, out: Path, n: int = 24, *extra: str) -> list[str]:
    return ["synth", "--teacher-url", url, "--teacher-model", "fake-7b", "--out", str(out), "-n", str(n),
            "--set", f"teacher.terms_of_use={TERMS}", "--set", "teacher.backoff_s=0.01",
            "--set", "teacher.max_concurrency=4", "--set", "generate.new_per_request=5",
            "--set", "generate.requests_per_round=3", *extra]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _examples(path: Path) -> list[tuple[str, str, str]]:
    return sorted((r["instruction"], r["input"], r["output"]) for r in _rows(path))


# --- the whole pipeline ---------------------------------------------------------------------------


def test_pipeline_filters_retries_provenance_and_report(teacher, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_TEACHER_KEY", "sk-test-secret-123")
    srv = teacher(fault=first_attempt_faults)
    out = tmp_path / "data" / "synth.jsonl"
    assert main(_args(srv.url, out, 30, "--set", "teacher.api_key_env=FAKE_TEACHER_KEY",
                      "--set", "teacher.tokens_per_minute=10000000",
                      "--set", "teacher.price_per_1m_prompt_tokens=0.5",
                      "--set", "teacher.price_per_1m_completion_tokens=1.5")) == 0
    report = json.loads((tmp_path / "data" / "synth.report.json").read_text())
    work = tmp_path / "data" / "synth.work"
    records = _rows(out)

    # counts: the report adds up, nothing vanishes between stages
    assert report["complete"] and report["kept"] == len(records) > 0
    assert report["stages"]["instructions"]["kept"] == 30
    rejected = _rows(work / "rejected.jsonl")
    assert report["rejected_total"] == len(rejected) == sum(report["rejected"].values())
    assert report["generated"] == report["kept"] + report["rejected_total"]
    reasons = report["rejected"]
    for why in ("instructions: near-duplicate (ROUGE-L > 0.7)", "instructions: too short (< 3 tokens)",
                "instructions: starts with punctuation", "instructions: unparseable reply",
                "instructions: needs what a text model cannot serve (image, graph, file, draw, …)",
                "instructions: cut off at max_tokens", "instances: duplicate input",
                "outputs: empty output", "outputs: same input with conflicting outputs"):
        assert reasons.get(why, 0) > 0, (why, reasons)
    cls = report["stages"]["classify"]
    assert cls["kept"] + sum(cls["rejected"].values()) == 30
    assert cls["classification"] > 0 and cls["not_classification"] > 0

    # retries: every injected fault was an attempt that failed and was retried, none given up
    faults = srv.faults()
    req = report["requests"]
    assert sum(faults.values()) > 5
    assert req["failed_attempts"] == req["retries"] == sum(faults.values()) and req["gave_up"] == 0
    assert req["failed_attempts_by_cause"]["HTTP 429"] == faults["429"]
    assert req["failed_attempts_by_cause"]["HTTP 500"] == faults["500"]
    assert req["failed_attempts_by_cause"]["malformed response"] == faults["garbage"]
    assert req["failed_attempts_by_cause"]["connection error"] == faults["drop"]
    assert req["paid_replies"] == len(srv.ok_hashes()) == sum(srv.ok_hashes().values())  # each paid once
    assert report["tokens"]["total"] > 0 and report["cost_estimate"]["amount"] > 0

    # provenance on every record; request ids lead to the journal
    journal = {e["key"]: e for e in _rows(work / "requests.jsonl") if e["kind"] == "reply"}
    seed_ids = {json.loads(line)["id"] for line in
                (Path(__file__).parents[2] / "src/dianjing/assets/dianjing_seeds.jsonl").read_text().splitlines()}
    for r in records:
        p = r["provenance"]
        assert p["teacher_url"] == srv.url and p["model"] == "fake-7b" and p["terms_of_use"] == TERMS
        assert p["stage"] in ("outputs", "instances") and re.match(r"\d{4}-\d\d-\d\dT", p["time"])
        assert p["seed_ids"] and set(p["seed_ids"]) <= seed_ids
        assert p["request_id"] in journal and p["requests"]["instruction"] in journal
        assert r["output"].strip() and r["output"] != r["input"]
    assert {r["provenance"]["method"] for r in records} == {"input-first", "output-first"}
    assert len({(r["instruction"], r["input"]) for r in records}) == len(records)

    # the key went to the server and nowhere else
    assert set(srv.auth) == {"Bearer sk-test-secret-123"}
    for f in [out, tmp_path / "data" / "synth.report.json", *work.iterdir()]:
        assert "sk-test-secret" not in f.read_text(encoding="utf-8", errors="replace")

    # `dianjing train --data OUT` reads it as alpaca (the provenance field is ignored)
    convs, load_report = load_conversations(DataConfig(files=[str(out)]), log=lambda *_: None)
    assert len(convs) == len(records) and load_report.files[0]["format"] == "alpaca"
    assert capsys.readouterr().out.strip().endswith(str(out))

    # a second run is a no-op: everything is answered from the files, nothing sent
    before = len(srv.served)
    assert main(_args(srv.url, out, 30, "--set", "teacher.api_key_env=FAKE_TEACHER_KEY")) == 0
    assert len(srv.served) == before and _rows(out) == records


def test_stages_one_at_a_time_and_completions_api(teacher, tmp_path):
    srv = teacher()
    out = tmp_path / "s.jsonl"
    args = _args(srv.url, out, 12, "--set", "teacher.api=completions")
    assert main([*args, "--stage", "instructions"]) == 0
    work = tmp_path / "s.work"
    assert len(_rows(work / "instructions.jsonl")) == 12 and not (work / "classify.jsonl").exists()
    assert not out.exists() or not out.read_text()
    report = json.loads((tmp_path / "s.report.json").read_text())
    assert report["stages_state"]["instructions"] == "done" and not report["complete"]
    assert main([*args, "--stage", "instances"]) == 0
    assert len(_rows(work / "instances.jsonl")) > 0 and (not out.exists() or not out.read_text())
    assert main(args) == 0
    assert len(_rows(out)) > 0
    assert json.loads((tmp_path / "s.report.json").read_text())["complete"]
    # raising --num-instructions continues the same run
    assert main(_args(srv.url, out, 15, "--set", "teacher.api=completions")) == 0
    assert len(_rows(work / "instructions.jsonl")) == 15


def test_alpaca_one_shot_mode(teacher, tmp_path):
    srv = teacher(fault=first_attempt_faults)
    out = tmp_path / "a.jsonl"
    assert main(_args(srv.url, out, 20, "--mode", "alpaca")) == 0
    rows = _rows(out)
    report = json.loads((tmp_path / "a.report.json").read_text())
    assert len(rows) == report["kept"] == 20
    assert report["rejected"].get("oneshot: unparseable task block", 0) > 0
    assert all(r["provenance"]["stage"] == "oneshot" and len(r["provenance"]["seed_ids"]) == 3 for r in rows)
    assert main([*_args(srv.url, out, 20, "--mode", "alpaca"), "--stage", "instances"]) == 2


# --- kill and resume -------------------------------------------------------------------------------


def _spawn(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dianjing", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, pattern: str, count: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count(pattern) >= count:
            return
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
        time.sleep(0.02)
    raise AssertionError(f"no {count}× {pattern!r} in {path} after {timeout}s")


def _journaled(work: Path) -> set[str]:
    return {body_hash(e["request"]) for e in _rows(work / "requests.jsonl") if e["kind"] == "reply"}


def test_sigkill_mid_run_then_resume_loses_and_repeats_nothing(teacher, tmp_path):
    ref_srv = teacher(fault=first_attempt_faults)
    ref_out = tmp_path / "ref" / "out.jsonl"
    assert main(_args(ref_srv.url, ref_out, 16)) == 0

    srv = teacher(fault=first_attempt_faults, delay=0.02)
    out = tmp_path / "run" / "out.jsonl"
    work = tmp_path / "run" / "out.work"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    seen_before = []
    # killed in stage (1), then in stage (3); then it runs to the end
    for pattern, count in (("instructions/r", 2), ("outputs/", 4)):
        p = _spawn(_args(srv.url, out, 16), env)
        _wait_for(work / "commits.jsonl", pattern, count, p)
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
        seen_before.append((len(srv.served), _journaled(work)))
    assert main(_args(srv.url, out, 16)) == 0

    assert _examples(out) == _examples(ref_out)  # nothing lost, nothing twice
    served = list(srv.served)
    for (start, paid), end in zip(seen_before, [s for s, _ in seen_before[1:]] + [len(served)]):
        again = {h for h, what in served[start:end] if what == "ok"} & paid
        assert not again, "a request whose reply was in the journal was sent again"
    ok = srv.ok_hashes()
    assert sum(ok.values()) - len(ok) <= 2 * 4  # at most the requests in flight at the two kills
    report = json.loads((tmp_path / "run" / "out.report.json").read_text())
    ref_report = json.loads((tmp_path / "ref" / "out.report.json").read_text())
    assert report["rejected"] == ref_report["rejected"] and report["kept"] == ref_report["kept"]


# --- the client on its own ---------------------------------------------------------------------------


def test_timeouts_are_retried_and_a_dead_teacher_stops_the_run_with_work_saved(teacher, tmp_path, capsys):
    srv = teacher(fault=lambda h, attempt, body: "slow" if attempt == 1 and int(h[:2], 16) % 3 == 0 else None,
                  slow_s=1.2)
    out = tmp_path / "t.jsonl"
    assert main([*_args(srv.url, out, 6, "--set", "teacher.timeout_s=0.4"), "--stage", "instructions"]) == 0
    report = json.loads((tmp_path / "t.report.json").read_text())
    assert report["requests"]["failed_attempts_by_cause"].get("timeout", 0) == srv.faults()["slow"] > 0

    down = teacher(fault=lambda h, attempt, body: "503")
    out2 = tmp_path / "d.jsonl"
    args = _args(down.url, out2, 6, "--set", "teacher.max_retries=2")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "3 attempts failed, the last with HTTP 503" in err and "run the same command again" in err
    report = json.loads((tmp_path / "d.report.json").read_text())
    assert report["requests"]["gave_up"] >= 1 and not report["complete"] and "HTTP 503" in report["error"]
    down.fault = lambda h, attempt, body: None  # the teacher is back
    assert main(args) == 0 and len(_rows(tmp_path / "d.work" / "instructions.jsonl")) == 6


def test_refusals_stop_at_once_with_the_fix(teacher, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    srv = teacher(fault=lambda h, attempt, body: "401")
    assert main(_args(srv.url, tmp_path / "o.jsonl", 5)) == 2
    err = capsys.readouterr().err
    assert "HTTP 401: invalid api key" in err and "$OPENAI_API_KEY (which is not set)" in err
    assert len(srv.served) <= 3  # no retries: the first round's requests only


def test_429_waits_for_retry_after_not_the_backoff(teacher, tmp_path):
    srv = teacher(fault=lambda h, attempt, body: "429" if attempt == 1 else None)
    out = tmp_path / "r.jsonl"
    t0 = time.monotonic()
    assert main([*_args(srv.url, out, 4, "--set", "generate.new_per_request=2", "--set", "teacher.backoff_s=5"),
                 "--stage", "instructions"]) == 0
    assert time.monotonic() - t0 < 4  # Retry-After (0.05 s) was used instead of the 5 s back-off
    assert srv.faults()["429"] >= 2


def test_settings_mismatch_and_missing_terms_are_refused(teacher, tmp_path, capsys):
    srv = teacher()
    out = tmp_path / "m.jsonl"
    assert main([*_args(srv.url, out, 4), "--stage", "instructions"]) == 0
    assert main([*_args(srv.url, out, 4, "--set", "teacher.temperature=1.3"), "--stage", "instructions"]) == 2
    assert "teacher.temperature: 0.7 then, 1.3 now" in capsys.readouterr().err
    args = [a for a in _args(srv.url, out, 4) if not a.startswith("teacher.terms_of_use")]
    args.remove("--set")
    assert main(args) == 2
    assert "teacher.terms_of_use is not set" in capsys.readouterr().err
    other = tmp_path / "someone_elses.jsonl"
    other.write_text('{"instruction": "keep me", "output": "please"}\n')
    assert main(_args(srv.url, other, 4)) == 2
    assert "no run of dianjing synth wrote it" in capsys.readouterr().err and "keep me" in other.read_text()


def test_local_transformers_teacher(tiny_llama, tmp_path, capsys):
    out = tmp_path / "l.jsonl"
    code = main(["synth", "--out", str(out), "-n", "1", "--set", f"teacher.local_model={tiny_llama}",
                 "--set", f"teacher.terms_of_use={TERMS}", "--set", "teacher.max_tokens=12",
                 "--set", "generate.requests_per_round=1", "--set", "generate.max_idle_rounds=1",
                 "--stage", "instructions"])
    # a random model writes no "Task N:" lines: the round keeps nothing and the run says why
    assert code == 2 and "rounds in a row kept no instruction" in capsys.readouterr().err
    replies = [e for e in _rows(tmp_path / "l.work" / "requests.jsonl") if e["kind"] == "reply"]
    assert len(replies) == 1 and replies[0]["response"]["usage"]["completion_tokens"] > 0
    report = json.loads((tmp_path / "l.report.json").read_text())
    assert report["teacher"]["url"] == f"local:{tiny_llama}"
    assert sum(report["rejected"].values()) >= 1
