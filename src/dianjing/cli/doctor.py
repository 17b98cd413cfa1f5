"""dianjing doctor: check the environment and say what to fix."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check torch, the GPUs, threads, bf16, disk, memory and the default model",
                       description="Check the environment dianjing runs in and say what to fix.")
    p.set_defaults(func=run)


def run(args) -> int:
    from dianjing.doctor import checks

    worst = 0
    for status, name, detail, fix in checks():
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[status]
        print(f"[{mark}] {name}: {detail}")
        if fix:
            print(f"       fix: {fix}")
        worst = max(worst, {"ok": 0, "warn": 0, "fail": 1}[status])
    return worst
