"""A fake OpenAI-compatible server on a free loopback port, for the judge and the teacher's client.

`FakeOpenAI(answer)` serves /v1/chat/completions and /v1/completions from a thread; `answer(body)` returns
the reply text, or one of the faults: ("status", N) an HTTP error, "garbage" a 200 that is no JSON,
"drop" a closed connection, ("slow", seconds, text) a late reply. It counts what it was asked.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"] if "messages" in body else body["prompt"]


def section(text: str, who: str) -> str:
    """The text of assistant `who`'s answer (or conversation) block in a judge prompt."""
    m = re.search(rf"\[The Start of Assistant {who}'s \w+\]\n(.*?)\n\[The End of Assistant {who}'s", text, re.S)
    return m.group(1) if m else ""


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops connections when a client opens more at once, and the
    # client's retry of the connection comes a second later: longer than the tests' timeouts
    request_queue_size = 128


class FakeOpenAI:
    def __init__(self, answer):
        self.answer = answer
        self.lock = threading.Lock()
        self.bodies: list[dict] = []
        self.faults = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, payload: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with fake.lock:
                    fake.bodies.append(body)
                what = fake.answer(body)
                try:
                    if isinstance(what, tuple) and what[0] == "status":
                        with fake.lock:
                            fake.faults += 1
                        return self._send(what[1], json.dumps({"error": {"message": f"fake {what[1]}"}}).encode())
                    if what == "garbage":
                        return self._send(200, b"<html>not json</html>")
                    if what == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if isinstance(what, tuple) and what[0] == "slow":
                        time.sleep(what[1])
                        what = what[2]
                    chat = self.path.endswith("/chat/completions")
                    choice = ({"index": 0, "message": {"role": "assistant", "content": what}} if chat
                              else {"index": 0, "text": what})
                    choice["finish_reason"] = "stop"
                    n_in = len(user_text(body)) // 4
                    usage = {"prompt_tokens": n_in, "completion_tokens": len(what) // 4,
                             "total_tokens": n_in + len(what) // 4}
                    self._send(200, json.dumps({"id": "x", "object": "chat.completion", "model": body.get("model"),
                                                "choices": [choice], "usage": usage}).encode())
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def requests(self) -> int:
        with self.lock:
            return len(self.bodies)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
