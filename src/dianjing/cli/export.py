"""dianjing export: merge the adapter into the base model and write a plain HF folder."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="merge a run into a plain Hugging Face folder",
                       description="Merge a LoRA/DoRA/IA3 adapter into its base model and write safetensors, "
                                   "tokenizer and chat template; transformers loads it without dianjing.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.set_defaults(func=run)


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.export import export

    out = export(args.run, args.out, args.dtype, log=log)
    log(f"exported to {out}")
    print(out)
    return 0
