"""dianjing serve: an OpenAI-compatible HTTP server for runs (several adapters on one base) or a model."""

from __future__ import annotations

import os
import socket

from dianjing.cli.common import add_device_option, check_device, choices
from dianjing.config import ModelConfig

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve runs or a model over the OpenAI API (chat/completions, completions, models)",
        description="Serve one base model with the adapters of several runs over an OpenAI-compatible HTTP API. "
                    "A request's 'model' picks a run by its folder name, or 'base' for the base model. "
                    "Concurrent requests are batched.")
    p.add_argument("targets", nargs="+", metavar="RUN_OR_MODEL",
                   help="run folders sharing one base model, or one model (folder, .gguf, hub id, alias)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every request (default: $DIANJING_API_KEY, "
                        "which other users cannot see in `ps`)")
    p.add_argument("--max-batch", type=int, default=16, help="sequences generated together at most")
    p.add_argument("--max-tokens-limit", type=int, default=2048, help="largest max_tokens a request may ask for")
    p.add_argument("--precision", choices=choices(ModelConfig, "precision"), default="auto")
    add_device_option(p)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for generation (default: torch's choice; 1 can be faster on a busy machine)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="seconds that running requests get to finish after SIGTERM / Ctrl-C; after that, open "
                        "streams get an error event and [DONE], waiting requests a 503")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser origin allowed to call the API, e.g. http://localhost:3000 for a chat UI "
                        "(repeat for several; '*' allows any page). Without it, requests from web pages are refused")
    p.add_argument("--max-waiting", type=int, default=256,
                   help="requests that may wait for a slot; beyond that they get 429 with Retry-After")
    p.set_defaults(func=run)


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.errors import DianjingError
    from dianjing.infer.models import load_models
    from dianjing.infer.server import Limits, Server, create_app

    api_key = args.api_key or os.environ.get("DIANJING_API_KEY") or None
    if min(args.max_batch, args.max_tokens_limit, args.max_waiting, 1 if args.threads is None else args.threads) < 1:
        raise DianjingError("--max-batch, --max-tokens-limit, --max-waiting and --threads must be at least 1")
    if args.shutdown_timeout < 0:
        raise DianjingError("--shutdown-timeout must be 0 or more seconds")
    check_device(args.device)  # these two before loading the model, which can take minutes
    check_port(args.host, args.port)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models = load_models(args.targets, args.precision, log=log, device=args.device)
    limits = Limits(max_tokens=args.max_tokens_limit, max_waiting=args.max_waiting)
    app = create_app(models, api_key=api_key, limits=limits, max_batch=args.max_batch,
                     loopback=args.host in LOOPBACK, cors_origins=tuple(args.cors_origin), log=log)
    if args.host not in LOOPBACK and api_key is None:
        log(f"warning: listening on {args.host} without an API key: anyone who can reach this port can use "
            "the model (set --api-key or DIANJING_API_KEY)")
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}/v1"
    log(f"models: {', '.join(models.served)}")
    log(f"OpenAI-compatible API at {url}; try: dianjing chat --url {url} --model {next(iter(models.served))}")
    # SIGTERM / Ctrl-C: stop accepting, let requests finish within the grace period, then end the rest
    Server(app, host=args.host, port=args.port, grace=args.shutdown_timeout).run()
    return 0


def check_port(host: str, port: int) -> None:
    """Fail now, with a message, if the address cannot be listened on."""
    from dianjing.errors import DianjingError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise DianjingError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                            fix="check --host; pick another --port, or stop the program using this one") from None
