"""Load on `dianjing serve`: requests/s and generated tokens/s at 1, 4 and 16 concurrent clients.

    python bench/serve_load.py                         # a tiny random local model (tests/tiny.py)
    python bench/serve_load.py --model gemma-3-270m    # a real one (converted once, cached)
    python bench/serve_load.py --model runs/NAME       # a run folder

The server runs in its own process on 127.0.0.1 (a free port). Each level starts C client
threads that each send --requests chat requests one after another (max_tokens --max-tokens,
temperature 0.7, a fixed seed per request). The peer is the same server with --max-batch 1
(no batching) under the highest concurrency, measured in the same run; the table gives
throughput as a ratio against it and against one client. "rows/step" is the mean number of
sequences per decoding step, from the server's /health counters. One JSON line per level.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "What is the capital of France?", "用一句話介紹你自己。", "Give me three tips for staying healthy.",
    "Translate to English: 今天天氣很好。", "Write a haiku about the sea.", "What is 17 times 23?",
    "Explain what a neural network is in simple words.", "列出三種常見的水果。",
    "Who wrote Romeo and Juliet?", "Describe the colour blue to someone who cannot see.",
    "Suggest a name for a black cat.", "Why is the sky blue?", "寫一句鼓勵的話。",
    "Summarise the plot of Cinderella in two sentences.", "What does HTTP stand for?", "Say hello in Japanese.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(target: str, max_batch: int, log_path: Path, threads: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "dianjing.cli", "serve", target, "--host", "127.0.0.1", "--port", str(port),
           "--max-batch", str(max_batch), "--precision", "fp32"]
    env = {k: v for k, v in os.environ.items() if k != "DIANJING_API_KEY"}
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # a first GGUF conversion takes minutes
    while True:
        if proc.poll() is not None:
            sys.exit(f"the server exited with code {proc.returncode}; its log:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"the server did not come up in 600 s; its log:\n{log_path.read_text()}")
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_level(url: str, model: str, clients: int, per_client: int, max_tokens: int) -> dict:
    """`clients` threads, each sending `per_client` chat requests in a row; returns the measurements."""
    latencies: list[float] = []
    tokens: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            barrier.wait()
            for j in range(per_client):
                i = k * per_client + j
                body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                        "max_tokens": max_tokens, "temperature": 0.7, "seed": i}
                t = time.perf_counter()
                r = http.post("/v1/chat/completions", json=body)
                with lock:
                    if r.status_code != 200:
                        errors.append(r.text)
                        continue
                    latencies.append(time.perf_counter() - t)
                    tokens.append(r.json()["usage"]["completion_tokens"])

    before = httpx.get(url + "/health").json()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = httpx.get(url + "/health").json()
    if errors:
        sys.exit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    steps = after["steps"] - before["steps"] + after["prefills"] - before["prefills"]
    return {"concurrency": clients, "requests": len(latencies), "wall_s": round(wall, 3),
            "requests_per_s": round(len(latencies) / wall, 3), "gen_tokens": sum(tokens),
            "gen_tokens_per_s": round(sum(tokens) / wall, 1),
            "latency_p50_s": round(statistics.median(latencies), 3), "latency_max_s": round(max(latencies), 3),
            "rows_per_step": round((after["generated_tokens"] - before["generated_tokens"]) / max(1, steps), 2)}


def measure(args, tmp: Path) -> list[dict]:
    """Start the server(s), run every level, return one result per level."""
    target = args.model
    if target is None:
        sys.path.insert(0, str(ROOT))
        from tests.tiny import build_model

        target = str(build_model(tmp / "tiny"))
    print(f"# serve_load {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"model {args.model or 'tiny random llama (tests/tiny.py)'}, max_tokens {args.max_tokens}, "
          f"{args.requests} requests per client, server --max-batch {args.max_batch} --threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.2f} before start")
    sides = [("batched", args.max_batch, args.concurrency)]
    if not args.no_peer:
        sides.append(("peer: --max-batch 1", 1, [max(args.concurrency)]))
    results: list[dict] = []
    for label, max_batch, levels in sides:
        proc, url = start_server(target, max_batch, tmp / f"server-{max_batch}.log", args.threads)
        try:
            model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
            run_level(url, model, 1, 1, args.max_tokens)  # warm-up, not counted
            for c in levels:
                results.append({"bench": "serve_load", "server": label, "max_batch": max_batch,
                                "model": args.model or "tiny", **run_level(url, model, c, args.requests,
                                                                           args.max_tokens)})
        finally:
            stop_server(proc)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="run folder, model folder or alias (default: a tiny random model)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=3, help="requests per client at each level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--no-peer", action="store_true", help="skip the --max-batch 1 server")
    ap.add_argument("--threads", type=int, help="the server's --threads (default: torch's choice)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve_load-") as d:  # the tiny model and the server logs
        results = measure(args, Path(d))

    one = next((r for r in results if r["max_batch"] == args.max_batch and r["concurrency"] == 1), None)
    peer = next((r for r in results if r["max_batch"] == 1), None)
    cols = ["server", "clients", "requests", "wall s", "req/s", "gen tok/s", "p50 s", "max s", "rows/step",
            "x 1 client", "x peer"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        vs_one = f"{r['gen_tokens_per_s'] / one['gen_tokens_per_s']:.2f}" if one else "-"
        same_c = peer is not None and r["concurrency"] == peer["concurrency"]
        vs_peer = f"{r['gen_tokens_per_s'] / peer['gen_tokens_per_s']:.2f}" if same_c else "-"
        print(f"| {r['server']} | {r['concurrency']} | {r['requests']} | {r['wall_s']:.2f} | "
              f"{r['requests_per_s']:.2f} | {r['gen_tokens_per_s']:.1f} | {r['latency_p50_s']:.2f} | "
              f"{r['latency_max_s']:.2f} | {r['rows_per_step']:.2f} | {vs_one} | {vs_peer} |")
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
