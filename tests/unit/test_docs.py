"""The documentation stays true to the code.

- docs/configuration.md is what scripts/gen_config_docs.py generates from config.py now;
- every ```yaml block in README.md and docs/*.md is marked with its kind
  (`<!-- yaml: run|mixture|registry|synth|sequence|skip -->` on the line before it) and loads with the
  loader of that kind;
- every `dianjing …` command in a ```bash / ```sh / ```console block parses with the real
  argument parser, so a renamed or removed flag fails here;
- every relative link between these files points at a file that exists.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import load_script

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
YAML_KINDS = ("run", "mixture", "registry", "synth", "sequence", "skip")
SHELL_LANGS = ("bash", "sh", "shell", "console")
CONTROL = {"&&", "||", ";", "|", "&", "|&"}

_FENCE = re.compile(r"^\s*```\s*([\w+-]*)")
_MARK = re.compile(r"^\s*<!--\s*yaml:\s*([\w-]+)\s*-->\s*$")


@dataclass
class Block:
    file: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    mark: str | None  # the kind named by <!-- yaml: KIND --> on the line before, if any

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        mark = _MARK.match(prev)
        out.append(Block(path, start + 1, lang, "\n".join(lines[start + 1:j]), mark.group(1) if mark else None))
        i = j + 1
    return out


ALL_BLOCKS = [b for p in DOCS for b in blocks(p)]
YAML_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("yaml", "yml")]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in SHELL_LANGS]


# --- (a) the generated configuration reference -----------------------------------------------------

def _generator():
    return load_script("scripts/gen_config_docs.py")


def test_configuration_md_is_generated_from_config_py():
    text, _ = _generator().generate()
    page = ROOT / "docs" / "configuration.md"
    assert page.is_file(), "docs/configuration.md is missing: run python scripts/gen_config_docs.py"
    assert page.read_text(encoding="utf-8") == text, (
        "docs/configuration.md is out of date with src/dianjing/config.py: run python scripts/gen_config_docs.py")


def test_configuration_md_lists_every_key():
    from dianjing.config import RunConfig

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for section, info in RunConfig.model_fields.items():
        for key in info.annotation.model_fields:
            assert f"| `{section}.{key}` |" in page, f"{section}.{key} is not in docs/configuration.md"


# --- (b) YAML blocks load with their loader --------------------------------------------------------

def test_docs_have_yaml_blocks_to_check():
    assert {b.mark for b in YAML_BLOCKS} >= {"run", "mixture", "registry", "synth"}


def _load(kind: str, path: Path):
    if kind == "run":
        from dianjing.config import load_config

        return load_config(path, [])
    if kind == "mixture":
        from dianjing.generalist.registry import load_mixture

        return load_mixture(path)  # validates the mixture; its registries are read only by `mix`
    if kind == "registry":
        from dianjing.generalist.registry import load_registry

        return load_registry(path)  # task sources are opened only when mixing
    if kind == "synth":
        from dianjing.teacher.settings import load_synth_config

        return load_synth_config(path, [])
    if kind == "sequence":
        from dianjing.lifelong.sequence import load_sequence

        return load_sequence(path)  # validates the sequence file; the tasks' data are read when training
    raise AssertionError(kind)


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=lambda b: b.where)
def test_yaml_block_loads(block: Block, tmp_path):
    assert block.mark is not None, (
        f"{block.where}: a ```yaml block without a kind: put <!-- yaml: KIND --> on the line before it, "
        f"KIND one of {', '.join(YAML_KINDS)}")
    assert block.mark in YAML_KINDS, f"{block.where}: unknown yaml kind '{block.mark}' (use {', '.join(YAML_KINDS)})"
    if block.mark == "skip":
        return
    path = tmp_path / "block.yaml"
    path.write_text(block.text + "\n", encoding="utf-8")
    from dianjing.errors import DianjingError

    try:
        _load(block.mark, path)
    except DianjingError as e:
        pytest.fail(f"{block.where}: the {block.mark} block does not load: {e}")


def test_marks_stand_before_yaml_blocks():
    """A <!-- yaml: --> mark that is not followed by a yaml block is a mistake (the block moved)."""
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if _MARK.match(line):
                nxt = next((x for x in lines[i + 1:] if x.strip()), "")
                m = _FENCE.match(nxt)
                assert m and m.group(1).lower() in ("yaml", "yml"), (
                    f"{path.relative_to(ROOT)}:{i + 1}: a yaml mark not followed by a ```yaml block")


# --- (c) dianjing commands parse with the real argument parser -------------------------------------

class _Captured(Exception):
    pass


def real_parser() -> argparse.ArgumentParser:
    """The parser `dianjing` itself uses: build_parser() if the CLI has one, else the one main() builds."""
    import dianjing.cli as cli

    if hasattr(cli, "build_parser"):
        return cli.build_parser()
    got = {}

    def grab(self, args=None, namespace=None):
        got["parser"] = self
        raise _Captured

    with pytest.MonkeyPatch.context() as m:
        m.setenv("TOKENIZERS_PARALLELISM", os.environ.get("TOKENIZERS_PARALLELISM", "false"))
        m.setattr(argparse.ArgumentParser, "parse_args", grab)
        with contextlib.suppress(_Captured):
            cli.main([])
    assert "parser" in got, "dianjing.cli.main() did not call parse_args"
    return got["parser"]


def commands(block: Block) -> list[tuple[int, list[str] | None, str]]:
    """(line, argv after 'dianjing', problem) for each dianjing command in a shell block.

    A line continues on the next after a trailing backslash; `$ ` prompts are dropped (in a
    console block only prompted lines are commands); comments, `&`, `&&`, `;` and pipes end a
    command. argv is None, with the problem said, when the line cannot be split like a shell.
    """
    out = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        first = i
        line = lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i]
        i += 1
        prompted = re.match(r"^\s*\$\s+", line)
        if block.lang == "console" and not prompted:
            continue  # output, not a command
        text = line[prompted.end():] if prompted else line
        if not re.search(r"(^|[\s;&|(])dianjing(\s|$)", text):
            continue
        where = block.line + first + 1
        lex = shlex.shlex(text, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        try:
            tokens = list(lex)
        except ValueError as e:
            out.append((where, None, f"cannot split {text!r} like a shell: {e}"))
            continue
        segment: list[str] = []
        for tok in [*tokens, ";"]:
            if tok in CONTROL or (tok and set(tok) <= set("&|;<>")):
                if segment and segment[0] == "dianjing":
                    out.append((where, segment[1:], ""))
                segment = []
            else:
                segment.append(tok)
    return out


COMMANDS = [(b, line, argv, problem) for b in SHELL_BLOCKS for line, argv, problem in commands(b)]


def test_docs_have_commands_to_check():
    names = {argv[0] for _, _, argv, _ in COMMANDS if argv}
    assert {"train", "validate", "chat", "export", "serve"} <= names, names


@pytest.fixture(scope="module")
def parser():
    return real_parser()


@pytest.mark.parametrize("block,line,argv,problem", COMMANDS,
                         ids=[f"{b.file.name}:{line}" for b, line, _, _ in COMMANDS])
def test_command_parses(parser, block, line, argv, problem):
    assert argv is not None, f"{block.file.relative_to(ROOT)}:{line}: {problem}"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            pytest.fail(f"{block.file.relative_to(ROOT)}:{line}: `dianjing {shlex.join(argv)}` does not parse:\n"
                        f"{err.getvalue().strip()}")


def test_parser_rejects_a_wrong_flag(parser):
    """The check above can fail: a flag that does not exist is refused."""
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        parser.parse_args(["train", "--learning-rate", "1e-4"])


# --- (d) relative links point at files that exist -------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(path: Path):
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file = target.split("#", 1)[0]
        if file and not (path.parent / file).exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"
