"""The layers of DESIGN.md hold: import-linter's contracts in pyproject.toml (layers import
only downward; no import circles between sibling modules) are kept, and they do catch a new
upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_are_kept() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "hwnas", tmp_path / "hwnas", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    # The IR, at the bottom, reaching up into a pass: the kind of import the contract forbids.
    (tmp_path / "hwnas" / "ir" / "upward.py").write_text("from hwnas.passes.dce import DeadCodeElimination\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "hwnas layers import only downward BROKEN" in result.stdout
    assert "hwnas.ir.upward -> hwnas.passes.dce" in result.stdout
