"""Every error a config or a data file can reach is a DianjingError that names the setting, the
cause and the fix. This test walks every `raise` of a built-in exception in src/ and requires a
stated reason why a user's config cannot reach it (an internal invariant, or a pydantic
validator whose ValueError the config loader turns into a ConfigError naming the key); a new
one fails here until it is either a DianjingError or added with its reason."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "dianjing"
BUILTIN = {"ValueError", "TypeError", "KeyError", "RuntimeError", "AssertionError", "Exception", "OSError",
           "IndexError", "AttributeError", "NotImplementedError"}

# (file relative to src/dianjing, exception, start of the message) → why no config reaches it as is
ALLOWED = {
    ("train/softmax_xent.py", "ValueError", "xent_ needs"): "internal: loss.py calls xent_ only on its own "
                                                           "contiguous CPU logits blocks; no config reaches it",
    ("generalist/registry.py", "ValueError", "task '"): "pydantic validator: load_registry reports it as a "
                                                        "ConfigError with the file and key",
    ("generalist/registry.py", "ValueError", "task names must be unique"): "pydantic validator, as above",
    ("lifelong/sequence.py", "ValueError", "must contain {task}"): "pydantic validator: load_sequence reports it "
                                                                  "as a ConfigError naming the file and key",
    ("lifelong/sequence.py", "ValueError", "fields: "): "pydantic validator, as above",
    ("lifelong/sequence.py", "ValueError", "question applies"): "pydantic validator, as above",
    ("lifelong/sequence.py", "ValueError", "task name "): "pydantic validator, as above",
    ("lifelong/evaluate.py", "ValueError", "unknown metric"): "metric is a Literal of the sequence schema",
    ("cli/common.py", "TypeError", ""): "a programming error: a CLI choice tied to a config field that is no Literal",
    ("data/bad_records.py", "ValueError", "on_error must be"): "on_error comes from a Literal config field or "
                                                                "argparse choices; only code can pass another",
    ("data/specialist_readers/read.py", "ValueError", "task must be one of"): "task.type is a Literal config field",
    ("infer/batcher.py", "ValueError", "a request needs"): "the server refuses empty prompts with a 400 first",
    ("infer/generate.py", "TypeError", "cannot rearrange"): "caught by can_rearrange; the batcher then serves "
                                                            "whole batches",
    ("teacher/client.py", "TypeError", "reply text is not"): "caught by the client and counted as an unparseable reply",
    ("teacher/client.py", "NotImplementedError", ""): "an abstract method",
    ("teacher/dedup.py", "ValueError", "threshold must be"): "teacher settings bound the threshold in their schema",
    ("eval/metrics.py", "ValueError", ""): "library metrics called by dianjing with predictions of the gold's "
                                           "own length and tags it produced; the message says what differs",
}


def _raises():
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            call = node.exc
            name = call.func.id if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) else \
                call.id if isinstance(call, ast.Name) else None
            if name not in BUILTIN:
                continue
            msg = ""
            if isinstance(call, ast.Call) and call.args:
                arg = call.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    msg = arg.value
                elif isinstance(arg, ast.JoinedStr):
                    msg = "".join(v.value for v in arg.values if isinstance(v, ast.Constant))
            yield str(path.relative_to(SRC)), name, msg, node.lineno


def test_every_builtin_raise_has_a_reason():
    unexplained = []
    for rel, name, msg, line in _raises():
        if not any(rel == f and name == e and msg.startswith(m) for f, e, m in ALLOWED):
            unexplained.append(f"src/dianjing/{rel}:{line}: raise {name}({msg[:60]!r}…)")
    assert not unexplained, ("raise a DianjingError (setting, cause, fix) or add the site to ALLOWED with the "
                             "reason no config reaches it:\n" + "\n".join(unexplained))


def test_no_assert_checks_user_input():
    asserts = [f"{p.relative_to(SRC)}:{n.lineno}" for p in SRC.rglob("*.py")
               for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))) if isinstance(n, ast.Assert)]
    assert not asserts, asserts


def test_the_registry_validators_reach_the_user_as_config_errors(tmp_path):
    from dianjing.errors import DianjingError
    from dianjing.generalist.registry import load_registry

    reg = tmp_path / "r.yaml"
    reg.write_text("tasks:\n  - name: a\n    cluster: c\n    source: x.jsonl\n    templates:\n"
                   "      - {name: t, input: 'x', target: 'y'}\n      - {name: t, input: 'x', target: 'y'}\n")
    with pytest.raises(DianjingError) as e:
        load_registry(reg)
    assert "template names must be unique" in str(e.value) and "r.yaml" in str(e.value)
