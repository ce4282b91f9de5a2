"""The task contract: a trained fp32 model in the IR, real data split for tuning (`train`) and
for reporting (`test`), and the metric that scores a model's logits on them.

This module stays light (numpy only at import): `hwnas compress --help` lists the registered
tasks without loading torch or onnxruntime (plain `hwnas --help` does not import it at all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from hwnas.ir.graph import Graph

SPLITS = ("train", "test")
INPUT = "input"
OUTPUT = "logits"
BATCH_DIM = "batch"
"""Name of the symbolic batch dimension of every bundled task's graph (torch export's dynamic axis)."""

DEFAULT_CACHE = Path.home() / ".cache" / "hwnas" / "subjects"
"""Where trained weights are kept (the folder name predates tasks, so existing caches stay valid)."""

Split = tuple[np.ndarray, np.ndarray]
"""Inputs (float32, preprocessed as the model expects) and int64 labels, one row per sample."""


class Metric(StrEnum):
    """What a task scores: both are top-1 rates, against different references."""

    ACCURACY = "accuracy"
    """Top-1 against the data's labels (classification)."""
    AGREEMENT = "agreement"
    """Top-1 agreement with the fp32 model: for data without labels the model was trained on
    (EfficientNet-Lite0 on photos that have no ImageNet labels)."""


@dataclass(eq=False)
class Task:
    """A trained fp32 model with data to calibrate or fine-tune on (`train`) and to report on (`test`).

    `graph` is the model lowered to the IR; for metric AGREEMENT the labels are the fp32
    model's own top-1 classes. `ids` names each sample of a split where that helps reading
    results (EfficientNet's photos and views); it is empty otherwise."""

    name: str
    graph: Graph
    train: Split
    test: Split
    metric: Metric
    num_classes: int
    module: nn.Module | None = None
    """The torch module the graph was lowered from (None for a model given as ONNX)."""
    input_name: str = INPUT
    reference: Callable[[np.ndarray], np.ndarray] | None = None
    """fp32 logits of inputs when there is no module (the graph run in onnxruntime)."""
    ids: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _reference: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.metric = Metric(self.metric)
        if self.module is None and self.reference is None:
            raise ValueError(f"task '{self.name}': needs a torch module or a reference function for fp32 logits")

    def split(self, split: str) -> Split:
        """The `train` or `test` split."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not '{split}'")
        return self.train if split == "train" else self.test

    @property
    def sample_size(self) -> int:
        """Test samples the metric is computed on: one sample moves it by 1/sample_size."""
        return len(self.test[0])

    def reference_logits(self, split: str = "test") -> np.ndarray:
        """The fp32 model's logits on a split (the torch module's, else `reference`'s), computed
        once and kept."""
        if split not in self._reference:
            x = self.split(split)[0]
            if self.module is not None:
                from hwnas.tasks.nets import module_logits

                self._reference[split] = module_logits(self.module, x)
            else:
                assert self.reference is not None  # __post_init__
                self._reference[split] = self.reference(x)
        return self._reference[split]

    def expected(self, split: str = "test") -> np.ndarray:
        """The classes a model's top-1 is compared with: the labels, or the fp32 model's top-1."""
        if self.metric is Metric.AGREEMENT:
            return self.reference_logits(split).argmax(axis=1)
        return self.split(split)[1]

    def score(self, logits: np.ndarray, split: str = "test") -> float:
        """The metric of a model's `logits` on a split (a fraction: 0.99 is 99%)."""
        return float((logits.argmax(axis=1) == self.expected(split)).mean())

    def with_test(self, data: Split) -> Task:
        """The same model and metric with `data` as the test split (a validation part of
        `train`, say); its fp32 reference logits are computed afresh for that data."""
        return replace(self, test=data, ids={})


def stratified(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[Split, Split]:
    """(train, test) with `test_fraction` of the samples held out, stratified by label, shuffled by `seed`."""
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    return (np.ascontiguousarray(xtr), ytr), (np.ascontiguousarray(xte), yte)
