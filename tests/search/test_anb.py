"""AnalogNAS-Bench: the restricted loader, its tuple order and its errors, on the real file."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hwnas.errors import DataError, HwnasError
from hwnas.search import anb
from hwnas.search.spaces import nasbench201 as nb201

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def bench() -> anb.AnalogNASBench:
    return anb.load()


def test_loads_every_cell_clean(bench: anb.AnalogNASBench) -> None:
    assert bench.values.shape == (nb201.NUM_ARCHS, len(anb.METRICS))
    assert not np.isnan(bench.values).any()
    assert bench.issues == []
    assert ((bench.values >= 0) & (bench.values <= 100)).all()


def test_tuple_order_known_cells(bench: anb.AnalogNASBench) -> None:
    # Exactly the cells whose output sees no input sit at chance; with the arch string's edge
    # order instead of NASLib's, 260 of them would be elsewhere.
    low = {nb201.arch_from_index(i) for i in np.flatnonzero(bench.values[:, 0] < 15.0)}
    disconnected = {a for a in nb201.all_archs() if anb.output_disconnected(a)}
    assert len(disconnected) == 341
    assert low == disconnected
    # Only edge (0,3) live: a real network (a conv straight to the output), far above chance.
    only_03 = "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"
    assert anb.arch_to_anb(only_03) == (1, 1, 2, 1, 1, 1)
    assert bench.query(only_03) > 50.0
    # Only edge (1,2) live: in the arch string it is the third edge, in the tuple the fourth.
    only_12 = "|none~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"
    assert anb.arch_to_anb(only_12) == (1, 1, 1, 2, 1, 1)
    assert bench.query(only_12) == pytest.approx(10.0, abs=1.0)
    # NAS-Bench-201's best CIFAR-10 cell is among the table's best too.
    assert bench.query(BEST) > np.percentile(bench.values[:, 0], 99.9)


def test_round_trip_and_uncertainty(bench: anb.AnalogNASBench) -> None:
    for i in (0, 1, 777, 15_624):
        arch = nb201.arch_from_index(i)
        assert anb.anb_to_arch(anb.arch_to_anb(arch)) == arch
    assert bench.query_uncertainty(BEST, "analog_drift_86400") > 0
    assert bench.query_uncertainty(BEST, "baseline_accuracy") == 0
    assert bench.query(nb201.parse_arch(BEST), "qat_accuracy") == bench.query(BEST, "qat_accuracy")
    with pytest.raises(anb.BenchFileError, match="unknown AnalogNAS-Bench metric"):
        bench.query(BEST, "latency")


def _cells(**override: object) -> dict[tuple[int, ...], object]:
    """A well-formed table built from our own record classes (what the real file holds)."""
    from itertools import product

    data: dict[tuple[int, ...], object] = {}
    for key in product(range(5), repeat=6):
        rec = anb._Architecture()
        fields: dict[str, object] = {"architecture": key}
        for m in anb.ACCURACIES:
            fields[m] = 50.0
        for m in anb.DRIFTS:
            drift = anb._DriftMeasurement()
            drift.__dict__.update(value=40.0, uncertainty=0.5)
            fields[m] = drift
        rec.__dict__.update(fields)
        data[key] = rec
    return data


def _dump(tmp_path, data: object) -> str:
    """Pickle with the file's own global names, as the package wrote them: protocol 2 writes a
    class as the text "c<module>\\n<name>\\n", which we rename."""
    raw = pickle.dumps(data, protocol=2)
    for ours, theirs in (("_Architecture", "Architecture"), ("_DriftMeasurement", "DriftMeasurement")):
        raw = raw.replace(f"chwnas.search.anb\n{ours}\n".encode(), f"canalognasbench.data\n{theirs}\n".encode())
    assert b"hwnas" not in raw
    path = tmp_path / "data.anb"
    path.write_bytes(raw)
    return str(path)


def test_sanity_checks_report_rows(tmp_path) -> None:
    data = _cells()
    bad = (0, 0, 0, 0, 0, 0)
    vars(data[bad])["ptq_accuracy"] = 130.0
    del vars(data[(2, 2, 2, 2, 2, 2)])["qat_accuracy"]
    vars(data[(1, 1, 1, 1, 1, 1)])["baseline_accuracy"] = 60.0  # no input reaches the output
    bench = anb.load(_dump(tmp_path, data))
    problems = {(i.arch, i.metric, i.problem) for i in bench.issues}
    # every disconnected cell claims 50%: 341 such rows, plus the two we broke
    assert len(bench.issues) == 341 + 2
    assert (anb.anb_to_arch(bad), "ptq_accuracy", "out of range") in problems
    assert (anb.anb_to_arch((2,) * 6), "qat_accuracy", "missing") in problems
    assert np.isnan(bench.query(anb.anb_to_arch(bad), "ptq_accuracy"))
    assert "341 x above chance with no input" in bench.summary()
    assert "1 x missing" in bench.summary()


def test_foreign_and_corrupt_files(tmp_path) -> None:
    evil = tmp_path / "evil.anb"
    evil.write_bytes(pickle.dumps(print))  # a global outside the two records
    with pytest.raises(anb.BenchFileError, match="not allowed"):
        anb.load(str(evil))
    cut = tmp_path / "cut.anb"
    cut.write_bytes(open(anb.default_path(), "rb").read()[:100_000])
    with pytest.raises(anb.BenchFileError, match="not an AnalogNAS-Bench file"):
        anb.load(str(cut))
    small = tmp_path / "small.anb"
    small.write_bytes(pickle.dumps({(0,) * 6: 1.0}))
    with pytest.raises(anb.BenchFileError, match="expected a dict of 15625"):
        anb.load(str(small))
    with pytest.raises(anb.BenchFileError, match="no such bench file"):
        anb.load(str(tmp_path / "missing.anb"))
    assert issubclass(anb.BenchFileError, DataError) and issubclass(anb.BenchFileError, HwnasError)
