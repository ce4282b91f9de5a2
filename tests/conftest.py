"""Shared fixtures: the nine model-zoo "light" models and onnx's node test cases.

Both come with the onnx wheel, so the tests need no download. The node test cases are
collected once per test process (a few seconds) and shared by every test that sweeps them.
"""

from __future__ import annotations

import atexit
import functools
import glob
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import pytest

from hwnas.errors import HwnasError
from hwnas.ir.graph import Graph

# The user's own calibrations (`hwnas calibrate` writes them under $XDG_DATA_HOME) would change
# what `cost` and `compile` print: every test process, and the CLIs it starts, get an empty one.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="hwnas-tests-data-")
atexit.register(shutil.rmtree, os.environ["XDG_DATA_HOME"], True)

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = {
    os.path.basename(p)[len("light_") : -len(".onnx")]: p for p in sorted(glob.glob(os.path.join(LIGHT_DIR, "*.onnx")))
}


@functools.cache
def node_test_cases() -> tuple:
    """onnx's backend node test cases (name, model, data_sets, rtol, atol), collected once."""
    from onnx.backend.test.case.node import collect_testcases

    # Building the expected outputs divides by zero, takes logs of negatives and so on.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return tuple(collect_testcases(None))


@dataclass(frozen=True)
class ImportedCase:
    """A node test case and what `import_onnx` made of it: a graph, or the error it raised."""

    case: object
    graph: Graph | None
    error: BaseException | None

    @property
    def refused(self) -> bool:
        return isinstance(self.error, HwnasError)


@functools.cache
def imported_node_cases() -> tuple[ImportedCase, ...]:
    from hwnas.frontends.onnx import import_onnx

    out = []
    for case in node_test_cases():
        try:
            out.append(ImportedCase(case, import_onnx(case.model), None))
        except Exception as e:  # the sweeps sort refusals (HwnasError) from crashes
            out.append(ImportedCase(case, None, e))
    return tuple(out)


@pytest.fixture(scope="session")
def light_model_paths() -> dict[str, str]:
    """Short name ('resnet50', 'vgg19', ...) -> path of each of the nine light models."""
    assert len(LIGHT_MODELS) == 9, f"expected the nine light models in {LIGHT_DIR}"
    return dict(LIGHT_MODELS)


@pytest.fixture(scope="session", params=sorted(LIGHT_MODELS), ids=sorted(LIGHT_MODELS))
def light_model(request: pytest.FixtureRequest) -> str:
    """Each light model's path in turn (tests that take it run once per model)."""
    return LIGHT_MODELS[request.param]


@pytest.fixture(scope="session")
def node_cases() -> tuple:
    return node_test_cases()


@pytest.fixture(scope="session")
def imported_cases() -> tuple[ImportedCase, ...]:
    """Every node test case with its imported graph. Tests must not mutate the graphs."""
    return imported_node_cases()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the summaries the sweeps record with `record_property("summary", text)`; their
    reports carry them back from xdist workers, where a plain print would be lost."""
    lines = []
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", None) != "call":
                continue
            lines += [str(v) for k, v in getattr(report, "user_properties", []) if k == "summary"]
    if lines:
        terminalreporter.write_sep("-", "hwnas sweeps")
        for text in lines:
            terminalreporter.write_line(text)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small forwards and short trainings: a second intra-op thread only spins on 2 busy cores.
    Modules that train or run torch use it with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
