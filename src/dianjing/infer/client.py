"""A streaming client for any OpenAI-compatible chat server, with the standard library only.

`dianjing chat --url` talks to `dianjing serve`, vLLM, llama.cpp's server or a hosted API
through this: GET /models to pick a model, POST /chat/completions with "stream": true and read
the server-sent events ("data: {json}" lines, then "data: [DONE]") as pieces of the answer.
No extra package: urllib is enough for one conversation at a time (the teacher, which sends
many requests at once with retries, has its own client in teacher/client.py).

Every failure becomes one DianjingError line that says what failed and what to do: an HTTP
error with the server's own message (401: pass an API key), a server that cannot be reached,
a URL that is not one, a line in the stream that is not JSON, an error event in the stream.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator

from dianjing.errors import DianjingError

TIMEOUT_S = 300.0  # a slow model on a CPU may take minutes before its first token


def api_key_from_env() -> str | None:
    """The API key the environment holds: $DIANJING_API_KEY (what `dianjing serve` reads), else $OPENAI_API_KEY."""
    return os.environ.get("DIANJING_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def open_url(url: str, key: str | None, body: dict | None = None, timeout: float = TIMEOUT_S):
    """Open a request (GET without a body, POST with a JSON one); errors become one-line DianjingErrors."""
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    try:
        return urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        try:  # an OpenAI-style body says why: {"error": {"message": ...}}
            message = json.loads(e.read())["error"]["message"]
        except Exception:
            message = e.reason
        fix = "pass --api-key KEY (or set DIANJING_API_KEY)" if e.code == 401 else None
        raise DianjingError(f"{url}: HTTP {e.code}: {message}", fix=fix) from None
    except (urllib.error.URLError, OSError) as e:
        raise DianjingError(f"cannot reach {url}: {getattr(e, 'reason', e)}",
                            fix="check --url, or start a server with `dianjing serve RUN`") from None
    except ValueError as e:  # not a URL at all
        raise DianjingError(f"--url: {e}", fix="give the API's base, e.g. http://127.0.0.1:8000/v1") from None


def sse_pieces(lines, where: str) -> Iterator[str]:
    """The answer pieces of a /chat/completions event stream (an iterable of byte lines) until [DONE]."""
    for raw in lines:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):  # comments, "event:" lines and the blank lines between events
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise DianjingError(f"{where} sent a line that is not JSON: {data[:200]!r}",
                                fix="is --url an OpenAI-compatible API?") from None
        if chunk.get("error"):
            raise DianjingError(f"the server failed: {chunk['error'].get('message')}")
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                yield piece


class ChatClient:
    """One OpenAI-compatible server: the models it lists, and streamed chat completions."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = TIMEOUT_S):
        self.base = base_url.rstrip("/")
        self.key = api_key
        self.timeout = timeout

    def models(self) -> list[str]:
        """The model names GET /models lists, in the server's order."""
        with open_url(f"{self.base}/models", self.key, timeout=self.timeout) as resp:
            return [m["id"] for m in json.loads(resp.read())["data"]]

    def stream(self, model: str, messages: list[dict], **params) -> Iterator[str]:
        """Pieces of the answer to `messages`; `params` go into the request body (max_tokens, temperature, ...)."""
        url = f"{self.base}/chat/completions"
        body = {"model": model, "messages": messages, "stream": True, **params}
        with open_url(url, self.key, body, timeout=self.timeout) as resp:
            yield from sse_pieces(resp, url)
