"""A round-trip check run over every node-test model that imports."""

from __future__ import annotations

from collections.abc import Callable

from hwnas.ir.graph import Graph


def assert_all_round_trip(
    imported_cases: tuple, check: Callable[[Graph], str | None], label: str,
    record_property: Callable[[str, object], None],
) -> None:
    """`check(graph)` returns the first difference after a round trip, or None. Every
    model is tried; the test then fails once, listing all that differ."""
    failures, count = [], 0
    for item in imported_cases:
        if item.graph is None:
            continue
        count += 1
        try:
            diff = check(item.graph)
        except Exception as e:  # collect them all, then fail once with the list
            diff = f"{type(e).__name__}: {e}"
        if diff is not None:
            failures.append(f"{item.case.name}: {diff}")
    record_property("summary", f"{label}: {count} node-test models (all that import_onnx accepts)")
    assert not failures, f"{len(failures)} of {count} do not round-trip:\n" + "\n".join(failures)
    assert count > 1700
