"""dianjing.infer.client against a tiny local HTTP server (stdlib, on 127.0.0.1, a free port)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dianjing.errors import DianjingError
from dianjing.infer.client import ChatClient

KEY = "sk-test"
PIECES = ["Hello", ", ", "world"]


class _Handler(BaseHTTPRequestHandler):
    """GET /v1/models and streaming POST /v1/chat/completions; a wrong key gets 401 with an OpenAI error body."""

    bodies: list[dict] = []  # replaced per server, see _serve

    def log_message(self, *args):  # keep the test output clean
        pass

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {KEY}":
            return True
        body = json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
        return False

    def do_GET(self):
        if not self._authorized():
            return
        body = json.dumps({"object": "list", "data": [{"id": "alpha"}, {"id": "base"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        if not self._authorized():
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b": a comment line, to be ignored\n\n")
        for piece in PIECES:
            chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def server():
    handler = type("Handler", (_Handler,), {"bodies": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", handler.bodies
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def test_streams_the_pieces_and_sends_the_request(server):
    url, bodies = server
    client = ChatClient(url + "/", api_key=KEY)  # a trailing slash is fine
    assert client.models() == ["alpha", "base"]
    history = [{"role": "user", "content": "hi"}]
    assert list(client.stream("alpha", history, max_tokens=8, temperature=0.0)) == PIECES
    assert bodies == [{"model": "alpha", "messages": history, "stream": True, "max_tokens": 8, "temperature": 0.0}]


def test_401_says_the_status_the_server_message_and_the_fix(server):
    url, _ = server
    with pytest.raises(DianjingError) as e:
        list(ChatClient(url, api_key="wrong").stream("alpha", [{"role": "user", "content": "hi"}]))
    text = str(e.value)
    assert "HTTP 401" in text and "Incorrect API key provided" in text and "--api-key" in text
    assert text.startswith(f"{url}/chat/completions: ")
    with pytest.raises(DianjingError, match="HTTP 401"):
        ChatClient(url, api_key=None).models()


def test_a_stream_line_that_is_not_json_is_named():
    from dianjing.infer.client import sse_pieces

    with pytest.raises(DianjingError, match="not JSON: '<html>'"):
        list(sse_pieces([b'data: {"choices": [{"delta": {"content": "a"}}]}\n', b"data: <html>\n"], "X"))
    with pytest.raises(DianjingError, match="the server failed: out of memory"):
        list(sse_pieces([b'data: {"error": {"message": "out of memory"}}\n'], "X"))
