"""Task `digits-cnn`: a small residual CNN with BatchNorm that hwnas trains on scikit-learn's
1,797 8x8 digits, its weights cached under ~/.cache/hwnas/subjects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hwnas.tasks.base import DEFAULT_CACHE, Metric, Split, Task, stratified
from hwnas.tasks.registry import register_task

if TYPE_CHECKING:
    from torch import nn

VERSION = 1
"""Part of the cache key: bump it when DigitsCNN or its training changes."""


@register_task("digits-cnn")
def load(seed: int = 0, epochs: int = 15, test_fraction: float = 0.3,
         cache_dir: str | Path | None = DEFAULT_CACHE, train_seed: int | None = None) -> Task:
    """A DigitsCNN trained with Adam (one-cycle schedule, batch 64) on scikit-learn's 1,797 digits,
    split stratified by `seed`. Training (initial weights and batch order) is seeded by
    `train_seed` (default: `seed`), so several trainings can share one split; it is deterministic
    (one thread; ~2 s). The weights are cached in `cache_dir` keyed by both seeds, epochs and split
    (None: no cache)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from hwnas.tasks.nets import DigitsCNN
    from hwnas.tasks.torch_models import load_cached, store_cached, task_from_module

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    train, test = stratified(x, digits.target.astype(np.int64), test_fraction, seed)
    # Standardize with the training split's statistics (one scalar each: corner pixels are constant).
    mean, std = float(train[0].mean()), float(train[0].std())
    train = ((train[0] - mean) / std, train[1])
    test = ((test[0] - mean) / std, test[1])
    tseed = seed if train_seed is None else train_seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tseed)
        module = DigitsCNN()
    # The key of a training seeded like its split is unchanged (caches made before train_seed stay valid).
    trained = "" if tseed == seed else f"-train{tseed}"
    key = f"digits-cnn-v{VERSION}-seed{seed}{trained}-epochs{epochs}-test{test_fraction:g}.pt"
    path = None if cache_dir is None else Path(cache_dir) / key
    if not (path is not None and load_cached(module, path)):
        _train(module, train, epochs, tseed)
        if path is not None:
            store_cached(module, path)
    module.eval()
    return task_from_module("digits-cnn", module, train, test, Metric.ACCURACY, 10)


def _train(module: nn.Module, data: Split, epochs: int, seed: int) -> None:
    import torch
    import torch.nn.functional as F

    from hwnas.tasks.torch_models import one_thread

    x, y = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    batch = 64
    with one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.Adam(module.parameters(), lr=3e-3, weight_decay=1e-4)
        steps = epochs * ((len(x) + batch - 1) // batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps)
        order = torch.Generator().manual_seed(seed)
        module.train()
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=order)
            for i in range(0, len(x), batch):
                idx = perm[i : i + batch]
                opt.zero_grad()
                F.cross_entropy(module(x[idx]), y[idx]).backward()
                opt.step()
                sched.step()
    module.eval()
