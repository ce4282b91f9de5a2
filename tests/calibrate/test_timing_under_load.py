"""Kernel timing describes the machine, not its load: a calibration measured while another
process shares the core scales the profiled times by the share of time the process ran."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.calibrate.timing import running_share, time_kernel

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")


def _conv(channels: int = 96, size: int = 56):  # noqa: ANN202
    """A 3x3 convolution of a few milliseconds: longer than a scheduler slice."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((channels, channels, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             [1, channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def one_core() -> Iterator[int]:
    """This process on one core (restored after)."""
    before = os.sched_getaffinity(0)
    core = min(before)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, before)


def test_a_process_sharing_the_core_does_not_inflate_kernel_times(one_core: int) -> None:
    model = _conv()
    alone = time_kernel(model, warmup=3, repeats=12, budget_s=0.0)
    spin = f"import os\nos.sched_setaffinity(0, {{{one_core}}})\nprint('spinning', flush=True)\nwhile True: pass"
    hog = subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE, text=True)
    try:
        assert hog.stdout is not None and hog.stdout.readline().strip() == "spinning"
        time.sleep(0.3)  # past the scheduler's credit for having waited
        wall, cpu = time.perf_counter(), time.thread_time()
        shared = time_kernel(model, warmup=3, repeats=12, budget_s=0.0)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    finally:
        hog.kill()
        hog.wait()
    assert cpu / wall < 0.8, "the spinning process did not take the core: nothing was tested"
    # Without the scaling the shared core doubles every time; with it the kernel keeps its time.
    assert shared.profiled_s == pytest.approx(alone.profiled_s, rel=0.35)
    assert shared.wall_s == pytest.approx(alone.wall_s, rel=0.35)


def test_running_share() -> None:
    assert running_share([0.010, 0.020], [0.010, 0.005], threads=1, n=2) == [1.0, 0.25]
    assert running_share([0.010, 0.020], [0.011, 0.005], threads=1, n=2)[0] == 1.0  # clock granularity
    assert running_share([0.010, 0.020, 0.040], [0.010, 0.010, 0.010], threads=1, n=2) == [0.5, 0.5]  # median
    assert running_share([0.010], [0.002], threads=4, n=3) == [1.0, 1.0, 1.0]  # the pool's work is not the caller's
