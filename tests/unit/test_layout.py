"""The README's file tree names every module in src/dianjing (a package line like `teacher/`
covers its folder), and every module it names exists; no module is over ~500 lines."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "dianjing"


def _tree() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index("```\nsrc/dianjing/"):]
    block = block[4:block.index("```", 4)]
    names, section = [], None
    for line in block.splitlines():
        if not line.startswith(" "):
            section = line.split()[0] if line.split() else None
            continue
        if section == "src/dianjing/":
            names.append(line.split()[0])
    return names


def test_the_readme_tree_names_every_module_and_only_real_ones():
    listed = _tree()
    folders = [n for n in listed if n.endswith("/")]
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        if path.name in ("__init__.py", "__main__.py") and rel not in listed:
            continue
        if rel not in listed and not any(rel.startswith(f) for f in folders):
            missing.append(rel)
    assert not missing, f"add these to the README's layout tree: {missing}"
    ghosts = [n for n in listed if not (SRC / n).exists()]
    assert not ghosts, f"the README's tree names modules that do not exist: {ghosts}"


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, long


def test_no_function_is_over_80_lines():
    import ast

    long = []
    for p in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{p.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
