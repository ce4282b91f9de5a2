"""Readable contracts: every public class has a docstring, and so does every public function
of the layers others build on (ir, passes, backends)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hwnas"
FUNCTION_LAYERS = ("ir", "passes", "backends")


def _undocumented(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE.parent)
    functions_too = rel.parts[1] in FUNCTION_LAYERS
    missing: list[str] = []

    def visit(body: list[ast.stmt], prefix: str, in_class: bool) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                if not ast.get_docstring(node):
                    missing.append(f"{rel}:{node.lineno} class {prefix}{node.name}")
                visit(node.body, f"{prefix}{node.name}.", True)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and functions_too and not in_class \
                    and not node.name.startswith("_") and not ast.get_docstring(node):
                missing.append(f"{rel}:{node.lineno} def {prefix}{node.name}")

    visit(ast.parse(path.read_text()).body, "", False)
    return missing


def test_public_classes_and_functions_have_docstrings() -> None:
    missing = [m for path in sorted(PACKAGE.rglob("*.py")) for m in _undocumented(path)]
    assert not missing, "no docstring:\n" + "\n".join(missing)


def test_the_check_sees_a_missing_docstring(tmp_path: Path) -> None:
    # The check itself can fail: a bare public function in a backends module is reported.
    global PACKAGE
    saved = PACKAGE
    try:
        PACKAGE = tmp_path / "hwnas"
        (PACKAGE / "backends").mkdir(parents=True)
        (PACKAGE / "backends" / "m.py").write_text('def priced(x):\n    return x\n\n\nclass Ok:\n    """Fine."""\n')
        assert _undocumented(PACKAGE / "backends" / "m.py") == ["hwnas/backends/m.py:1 def priced"]
    finally:
        PACKAGE = saved
