"""dianjing chat: a streaming, multi-turn terminal chat with a run, a model, or an OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="talk to a run or a model in the terminal",
                       description="Streaming multi-turn chat using the template the run was trained with, or "
                                   "with any OpenAI-compatible server (--url). "
                                   "Type /reset to start over, /exit to leave.")
    p.add_argument("target", metavar="RUN_OR_MODEL", nargs="?",
                   help="run folder, model folder, .gguf file or hub id (not with --url)")
    p.add_argument("--url", help="an OpenAI-compatible server instead, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", help="with --url: the model to ask (default: the server's first)")
    p.add_argument("--api-key", help="with --url: the API key (default: $DIANJING_API_KEY or $OPENAI_API_KEY)")
    p.add_argument("--prompt", "-p", help="answer this one prompt and exit")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7, help="0 for greedy decoding")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=run)


Replier = Callable[[list[dict]], Iterator[str]]  # the conversation so far → pieces of the answer


def local_replier(args) -> Replier:
    from dianjing.cli import log
    from dianjing.infer.generate import SamplingParams, prompt_ids, stream
    from dianjing.infer.load import load_run

    model, tok, template = load_run(args.target, log=log)
    params = SamplingParams(args.max_new_tokens, args.temperature, args.top_p, seed=args.seed)
    return lambda history: stream(model, tok, prompt_ids(tok, template, history), params, template.stop_strings)


def _http(url: str, key: str | None, body: dict | None = None):
    """Open a request to an OpenAI-compatible server; errors become one-line DianjingErrors."""
    import urllib.error
    import urllib.request

    from dianjing.errors import DianjingError

    headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    try:
        return urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=300)
    except urllib.error.HTTPError as e:
        try:
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


def remote_replier(args) -> Replier:
    """Stream answers from /chat/completions of an OpenAI-compatible server (stdlib HTTP, no extra package)."""
    from dianjing.cli import log
    from dianjing.errors import DianjingError

    base = args.url.rstrip("/")
    key = args.api_key or os.environ.get("DIANJING_API_KEY") or os.environ.get("OPENAI_API_KEY")
    model = args.model
    if model is None:
        with _http(f"{base}/models", key) as resp:
            names = [m["id"] for m in json.loads(resp.read())["data"]]
        if not names:
            raise DianjingError(f"{base}/models lists no models", fix="pass --model NAME")
        model = names[0]
        log(f"chat: model {model} (the server has {', '.join(names)}; pick one with --model)")

    def reply(history: list[dict]) -> Iterator[str]:
        body = {"model": model, "messages": history, "stream": True, "max_tokens": args.max_new_tokens,
                "temperature": args.temperature, "top_p": args.top_p}
        if args.seed is not None:
            body["seed"] = args.seed
        with _http(f"{base}/chat/completions", key, body) as resp:
            for raw in resp:  # server-sent events: "data: {json}" lines, then "data: [DONE]"
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise DianjingError(f"{base}/chat/completions sent a line that is not JSON: {data[:200]!r}",
                                        fix="is --url an OpenAI-compatible API?") from None
                if chunk.get("error"):
                    raise DianjingError(f"the server failed: {chunk['error'].get('message')}")
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece

    return reply


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.errors import DianjingError
    from dianjing.infer.generate import AnswerStart

    if (args.url is None) == (args.target is None):
        raise DianjingError("give either RUN_OR_MODEL or --url URL",
                            fix="dianjing chat runs/NAME   or   dianjing chat --url http://127.0.0.1:8000/v1")
    if args.url is None and (args.model or args.api_key):
        raise DianjingError("--model and --api-key go with --url", fix="add --url, or leave them out")
    reply = remote_replier(args) if args.url else local_replier(args)
    history: list[dict] = [{"role": "system", "content": args.system}] if args.system else []

    def answer(text: str) -> str:
        history.append({"role": "user", "content": text})
        parts, start = [], AnswerStart()
        for piece in reply(history):
            piece = start(piece)
            if not piece:
                continue
            sys.stdout.write(piece)
            sys.stdout.flush()
            parts.append(piece)
        sys.stdout.write("\n")
        reply_text = "".join(parts).strip()
        history.append({"role": "assistant", "content": reply_text})
        return reply_text

    if args.prompt is not None:
        answer(args.prompt)
        return 0
    log("chat: type a message; /reset clears the conversation, /exit (or Ctrl-D) leaves")
    while True:
        try:
            text = input("> ").strip()
        except EOFError:
            print()
            return 0
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            del history[1 if args.system else 0:]
            continue
        if text:
            answer(text)
