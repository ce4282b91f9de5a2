"""Mutated ONNX files never crash the CLI: `hwnas inspect` and `hwnas opt` on a few hundred seeded
mutants of real models (tools/bench/fuzz.py's mutator; the benchmark runs thousands) end in exit
code 0, or in exit code 2 with one line on stderr and no output file. An exception escaping
`hwnas.cli.main`, the CLI's last-resort "internal error" line, a second line or a file left behind
are failures."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "tools" / "bench" / "fuzz.py"
CASES = 360
CHUNKS = 6


def _fuzz() -> ModuleType:
    """tools/bench/fuzz.py as a module (tools/ is no package)."""
    if "bench_fuzz" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_fuzz", FUZZ)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_fuzz"] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules["bench_fuzz"]


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_mutated_models_fail_in_one_line_or_pass(chunk: int, tmp_path: Path) -> None:
    fuzz = _fuzz()
    per = CASES // CHUNKS
    failures, outcomes = [], Counter()
    for i, stem, mutation, data in list(fuzz.mutants(seed=0, count=CASES))[chunk * per:(chunk + 1) * per]:
        model = tmp_path / f"case{i}.onnx"
        model.write_bytes(data)
        for command in fuzz.COMMANDS:
            out = tmp_path / "out.onnx"
            out.unlink(missing_ok=True)
            o = fuzz.run_cli(command, model, out)
            outcomes[o.kind] += 1
            if o.failed:
                failures.append(f"case {i} ({stem}, {mutation}) hwnas {command}: {o.kind}: {o.detail}")
        model.unlink()
    assert not failures, "\n".join(failures)
    # The mutants bite, and some still run: the test is not vacuous either way.
    assert outcomes["error"] > outcomes["ok"] / 2 and outcomes["ok"] > 0, outcomes


def test_mutator_is_seeded_and_covers_every_mutation() -> None:
    fuzz = _fuzz()
    first = [(i, stem, m, data) for i, stem, m, data in fuzz.mutants(seed=3, count=40)]
    assert first == list(fuzz.mutants(seed=3, count=40))  # the same seed, the same files
    assert first != list(fuzz.mutants(seed=4, count=40))
    seen = {m for _, _, m, _ in fuzz.mutants(seed=0, count=CASES)}
    assert seen == set(fuzz.MUTATIONS)
