"""Former home of the compression subjects, now tasks in `hwnas.tasks`. Only these names stay,
for tests outside tests/compress that still import them; new code imports `hwnas.tasks`."""

from __future__ import annotations

from hwnas.tasks import Task as Subject
from hwnas.tasks import load_task as load_subject
from hwnas.tasks.digits_cnn import load as digits_cnn
from hwnas.tasks.evaluate import evaluate, predict

__all__ = ["Subject", "digits_cnn", "evaluate", "load_subject", "predict"]
