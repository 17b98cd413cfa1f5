"""dianjing chat: a streaming, multi-turn terminal chat with a run, a model, or an OpenAI-compatible server."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

from dianjing.cli.common import add_device_option, check_device


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
    add_device_option(p, help="RUN_OR_MODEL: where it computes, auto (default: CUDA when present, else Apple's "
                              "MPS, else the CPU), cpu, cuda, cuda:N or mps (with --url the server decides)")
    p.set_defaults(func=run)


Replier = Callable[[list[dict]], Iterator[str]]  # the conversation so far → pieces of the answer


def local_replier(args) -> Replier:
    from dianjing.cli import log
    from dianjing.infer.generate import SamplingParams, prompt_ids, stream
    from dianjing.infer.load import load_run

    model, tok, template = load_run(args.target, log=log, device=args.device)
    params = SamplingParams(args.max_new_tokens, args.temperature, args.top_p, seed=args.seed)
    return lambda history: stream(model, tok, prompt_ids(tok, template, history), params, template.stop_strings,
                                  template)


def remote_replier(args) -> Replier:
    """Stream answers from an OpenAI-compatible server (dianjing.infer.client); --model defaults to its first."""
    from dianjing.cli import log
    from dianjing.errors import DianjingError
    from dianjing.infer.client import ChatClient, api_key_from_env

    client = ChatClient(args.url, args.api_key or api_key_from_env())
    model = args.model
    if model is None:
        names = client.models()
        if not names:
            raise DianjingError(f"{client.base}/models lists no models", fix="pass --model NAME")
        model = names[0]
        log(f"chat: model {model} (the server has {', '.join(names)}; pick one with --model)")
    params = {"max_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}
    if args.seed is not None:
        params["seed"] = args.seed
    return lambda history: client.stream(model, history, **params)


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.errors import DianjingError
    from dianjing.infer.generate import AnswerStart

    if (args.url is None) == (args.target is None):
        raise DianjingError("give either RUN_OR_MODEL or --url URL",
                            fix="dianjing chat runs/NAME   or   dianjing chat --url http://127.0.0.1:8000/v1")
    if args.url is None and (args.model or args.api_key):
        raise DianjingError("--model and --api-key go with --url", fix="add --url, or leave them out")
    if args.url is not None and args.device != "auto":
        raise DianjingError("--device is for a local RUN_OR_MODEL; with --url the server decides where it computes",
                            fix="leave --device out, or start the server with: dianjing serve RUN --device DEVICE")
    if args.url is None:
        check_device(args.device)
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
