"""The prune → fine-tune → check loop (seed 003): prune a little more of the channels, fine-tune
(with distillation from the uncompressed model), check the accuracy on held-out validation
samples, and go on until the loss exceeds the tolerance; the last model within it wins.

The check uses a validation part of the training split (never the test split, which only
reports), so the stopping decision does not peek at the figures it is judged by.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from hwnas.compress.finetune import FinetuneConfig, finetune
from hwnas.ir.dims import Sizes
from hwnas.ir.graph import Graph
from hwnas.ir.registry import graph_weights, op_counts
from hwnas.passes.bind_dims import bound_copy
from hwnas.passes.channels import channel_groups
from hwnas.passes.prune_channels import prune_channels, ratios_toward
from hwnas.passes.prune_policy import sensitivity_ratios
from hwnas.tasks import Metric, Task
from hwnas.tasks.evaluate import evaluate, predict


@dataclass
class Step:
    """One round of the loop: how far it pruned, what that left, and whether it stayed within tolerance."""

    ratio: float
    """Channels removed so far, as a fraction of the original model's (the target)."""
    pruned: float
    """Channels actually removed so far, as a fraction of those of the original model's
    prunable groups (below `ratio` where counts round up to `multiple` or channels must stay)."""
    params: int
    macs: int
    val_pruned: float
    """Validation accuracy right after pruning, before fine-tuning."""
    val: float
    """Validation accuracy after fine-tuning."""
    accepted: bool


@dataclass
class CompressResult:
    """The loop's outcome: the last model within tolerance, its test figure beside the
    original's, (before, after) params and MACs, and every step tried."""

    graph: Graph
    baseline_val: float
    baseline_test: float
    test: float
    params: tuple[int, int]
    macs: tuple[int, int]
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What the loop did beyond the steps asked for (targets skipped because they removed nothing)."""

    @property
    def ratio(self) -> float:
        """Share of the original channels pruned in the returned model (0 when no step was kept)."""
        accepted = [s.ratio for s in self.steps if s.accepted]
        return accepted[-1] if accepted else 0.0

    def to_json(self) -> dict[str, object]:
        """The figures and steps as JSON-ready values (`hwnas compress --json`)."""
        return {"baseline_val": self.baseline_val, "baseline_test": self.baseline_test, "test": self.test,
                "ratio": self.ratio, "params": list(self.params), "macs": list(self.macs),
                "steps": [asdict(s) for s in self.steps], "notes": list(self.notes)}


def size(graph: Graph, sample: tuple[int, ...] | None = None) -> tuple[int, int]:
    """(params, MACs) of a graph for one sample: its input shaped (1, *`sample`) where its dims
    are symbolic (an OCR model's height and width come from the data), else with symbolic dims
    as 1."""
    sizes: Sizes = {graph.inputs[0].name: (1, *sample)} if sample is not None and len(graph.inputs) == 1 else {}
    graph = bound_copy(graph, sizes=sizes)
    weights = graph_weights(graph)  # each weight once, as hwnas inspect counts it
    counts = [c for n in graph.nodes if (c := op_counts(n, weights=weights)) is not None]
    return sum(c.params for c in counts), sum(c.macs for c in counts)


def _prune_step(current: Graph, original: dict[str, int], done: float, target: float, step: float,
                max_ratio: float, task: Task, ft: tuple[np.ndarray, np.ndarray], criterion: str, policy: str,
                multiple: int, stage: Callable[[str], None]) -> tuple[Graph | None, float, list[float]]:
    """A copy of `current` pruned to `target` of the original channels, or to the first later
    target (by `step`, up to `max_ratio`) that removes at least one channel; with the target
    reached and the ones skipped. None when no target up to `max_ratio` removes anything."""
    skipped: list[float] = []
    while target <= max_ratio + 1e-9:
        candidate = copy.deepcopy(current)
        stage(f"pruning to {target:.0%} of the channels")
        if policy == "sensitivity":
            q = 1.0 - (1.0 - target) / (1.0 - done)
            feeds = {task.input_name: ft[0][:16]}
            ratios: float | dict[str, float] = sensitivity_ratios(candidate, q, criterion, feeds=feeds)
        else:
            ratios = ratios_toward(candidate, original, target)
        if prune_channels(candidate, ratios, criterion, multiple):
            return candidate, target, skipped
        skipped.append(target)
        target += step
    return None, target, skipped


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int
                     ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(fine-tune part, validation part) of a training split, shuffled with `seed`."""
    order = np.random.default_rng(seed).permutation(len(x))
    k = max(1, int(round(fraction * len(x))))
    return (x[order[k:]], y[order[k:]]), (x[order[:k]], y[order[:k]])


def compress(task: Task, *, tolerance: float = 0.01, step: float = 0.1, max_ratio: float = 0.9,
             criterion: str = "l1", policy: str = "uniform", multiple: int = 1,
             finetune_config: FinetuneConfig | None = None, val_fraction: float = 0.2,
             on_step: Callable[[Step], None] | None = None,
             on_train: Callable[[int, int, float], None] | None = None,
             on_stage: Callable[[str], None] | None = None,
             on_note: Callable[[str], None] | None = None) -> CompressResult:
    """Runs the loop on `task`'s graph (left untouched) and returns the last model whose
    validation accuracy is within `tolerance` (a fraction: 0.01 is one point) of the
    original's; `multiple` rounds kept channel counts (see prune-channels). A target that
    removes no channel (rounding to `multiple` keeps every count) is skipped for the next
    one that removes some, with a note. `on_step` sees each step's figures, `on_train` each
    fine-tuning step, `on_stage` what runs now, `on_note` each note as it is made."""
    if not 0.0 < step < 1.0 or not 0.0 < max_ratio < 1.0:
        raise ValueError("step and max_ratio must be in (0, 1)")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, not {tolerance}")
    finetune_config = finetune_config or FinetuneConfig()
    stage = on_stage or (lambda _: None)
    ft, val = split_validation(*task.train, val_fraction, finetune_config.seed)
    base = task.graph
    val_task = task.with_test(val)
    stage("evaluating the original model")
    baseline_val = evaluate(base, val_task, "test")
    baseline_test = evaluate(base, task, "test")
    fp32_logits = predict(base, task.with_test(ft), "test")
    teacher = fp32_logits if finetune_config.kd_alpha > 0 else None
    if task.metric is Metric.AGREEMENT:  # the labels are the fp32 model's top-1
        ft = (ft[0], fp32_logits.argmax(1))
    current, done = copy.deepcopy(base), 0.0
    original = {g.name: g.channels for g in channel_groups(current) if g.components}
    sample = tuple(task.train[0].shape[1:])  # the data's sample shape sizes symbolic input dims
    params0, macs0 = size(base, sample)
    result = CompressResult(current, baseline_val, baseline_test, baseline_test, (params0, params0), (macs0, macs0))
    target = step
    while target <= max_ratio + 1e-9:
        candidate, target, skipped = _prune_step(current, original, done, target, step, max_ratio, task, ft,
                                                 criterion, policy, multiple, stage)
        if skipped:
            note = (f"pruning to {', '.join(f'{t:.0%}' for t in skipped)} of the channels removes none"
                    + (f" (kept counts round up to multiples of {multiple})" if multiple > 1 else ""))
            note += f"; went on to {target:.0%}" if candidate is not None else "; stopped"
            result.notes.append(note)
            if on_note is not None:
                on_note(note)
        if candidate is None:
            break  # nothing left that can go up to max_ratio
        val_pruned = evaluate(candidate, val_task, "test")
        stage(f"fine-tuning at {target:.0%}")
        finetune(candidate, ft, finetune_config, teacher_logits=teacher, progress=on_train)
        acc = evaluate(candidate, val_task, "test")
        params, macs = size(candidate, sample)
        ok = baseline_val - acc <= tolerance + 1e-12
        left = {g.name: g.channels for g in channel_groups(candidate)}
        pruned = 1.0 - sum(left.get(n, c) for n, c in original.items()) / max(sum(original.values()), 1)
        s = Step(round(target, 6), round(pruned, 6), params, macs, val_pruned, acc, ok)
        result.steps.append(s)
        if on_step is not None:
            on_step(s)
        if not ok:
            break
        current, done = candidate, target
        target += step
    result.graph = current
    params, macs = size(current, sample)
    result.params, result.macs = (params0, params), (macs0, macs)
    stage("evaluating the result on the test split")
    result.test = evaluate(current, task, "test")
    return result

