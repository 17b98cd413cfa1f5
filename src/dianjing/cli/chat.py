"""dianjing chat: a streaming, multi-turn terminal chat with a run or a model."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="talk to a run or a model in the terminal",
                       description="Streaming multi-turn chat using the template the run was trained with. "
                                   "Type /reset to start over, /exit to leave.")
    p.add_argument("target", metavar="RUN_OR_MODEL", help="run folder, model folder, .gguf file or hub id")
    p.add_argument("--prompt", "-p", help="answer this one prompt and exit")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7, help="0 for greedy decoding")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.infer.generate import SamplingParams, prompt_ids, stream
    from dianjing.infer.load import load_run

    model, tok, template = load_run(args.target, log=log)
    params = SamplingParams(args.max_new_tokens, args.temperature, args.top_p, seed=args.seed)
    history: list[dict] = [{"role": "system", "content": args.system}] if args.system else []

    def answer(text: str) -> str:
        history.append({"role": "user", "content": text})
        parts = []
        for piece in stream(model, tok, prompt_ids(tok, template, history), params, template.stop_strings):
            if not parts:
                piece = piece.lstrip()  # templates like "AI: answer" put a space before the answer
                if not piece:
                    continue
            sys.stdout.write(piece)
            sys.stdout.flush()
            parts.append(piece)
        sys.stdout.write("\n")
        reply = "".join(parts).strip()
        history.append({"role": "assistant", "content": reply})
        return reply

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
