"""Hardware-aware training (HWA) of an analog model: the graph's placed layers on aihwkit tiles
of the target, fine-tuned while aihwkit injects weight noise into every forward and backward
pass (its InferenceRPUConfig weight modifier, redrawn each step, relative to each tile's
largest weight) and remaps each tile's columns to a symmetric range after every step, so the
weights learn to tolerate programming noise, read noise and drift (Rasch et al., "Hardware-aware
training for large-scale and diverse deep learning inference workloads using in-memory
computing-based accelerators", Nature Communications 14, 5282, 2023). The rest of the settings
(ADC/DAC resolution, output noise, tile size) are the target's (`hwnas.analog.config`).

The schedule, the distillation loss from the float model and its settings are fine-tuning's
(`hwnas.compress.finetune`: FinetuneConfig, distillation_loss); the optimizer is aihwkit's
AnalogAdam, which steps the tiles' shared weights and then applies the modifier and remap.

What the schedule does matters more than the noise's form. On a device whose noise costs the
MNIST CNN points (analog-pcm with 6x its PCM programming and read noise: 13.5 ± 1.5 points at one
day, 3 seeds), STRESSED_RECIPE (12 epochs at lr 3e-3, noise 0.3, distilled) takes the 1-day drop
to 4.6 ± 0.6 points, where 6 epochs at lr 1e-4 took off only a third; more noise (0.5) made
training diverge, and aihwkit's PCM-shaped modifiers (PROG_NOISE, or POLY fitted to the device's
noise at one day) did no better than the Gaussian at 6 epochs (tools/bench/analog.py
--noise-scale 6 measures it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hwnas.analog.convert import AnalogModel, to_analog
from hwnas.backends.target import Target
from hwnas.compress.finetune import FinetuneConfig, train_loop, training_steps
from hwnas.ir.graph import Graph

DEFAULT_NOISE = 0.06
"""Std of the weight noise injected while training, relative to each tile's largest |weight|."""
DEFAULT_CLIP = 0.0
"""Weights clipped at this many standard deviations of their tile after each step (0: not clipped;
Rasch et al. use 2.5, which did not help the digits CNN here)."""


@dataclass
class HWATrained:
    """What `hwa_train` gives: the trained analog model (its tiles hold the trained weights: save them
    with `hwnas.analog.convert.save_analog_state` before simulating, as programming and drift
    overwrite them) and the mean loss of each epoch."""

    model: AnalogModel
    losses: list[float]


@dataclass(frozen=True)
class HWARecipe:
    """A training schedule for `hwa_train`: FinetuneConfig's epochs and lr, and hwa_train's noise and distill."""

    epochs: float
    lr: float
    noise: float
    distill: bool


STRESSED_RECIPE = HWARecipe(epochs=12.0, lr=3e-3, noise=0.3, distill=True)
"""Halves the MNIST CNN's 1-day drop at 6x the PCM noise; the defaults (one epoch at lr 1e-4, noise
0.06) suit the target as its file sets it, where drift compensation leaves no drop to remove."""


def hwa_train(graph: Graph, target: str | Path | Target, data: tuple[np.ndarray, np.ndarray],
              config: FinetuneConfig | None = None, *, noise: float = DEFAULT_NOISE,
              clip_sigma: float = DEFAULT_CLIP, distill: bool = False, compensation: bool | None = None,
              progress: Callable[[int, int, float], None] | None = None) -> HWATrained:
    """Fine-tune `graph` on analog tiles of `target` on `data` (inputs, int labels) with `noise`
    (relative std) injected into the analog weights at every step, and the weights clipped at
    `clip_sigma` standard deviations of their tile after each (0: not clipped). With `distill`
    the loss mixes cross-entropy and distillation from the float graph's logits by
    `config.kd_alpha`. `compensation` overrides the target's global drift compensation. The graph
    is not changed (a graph without placements is mapped by `map-analog` on a copy); digital
    layers train as plain torch parameters. `progress(step, steps, loss)` follows every step.
    Seeded by `config.seed` (shuffling, the injected noise); ValueError for inconsistent data."""
    config = config or FinetuneConfig()
    x, y = data
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"training data needs one label per input, and some inputs (got {len(x)} inputs, "
                         f"{len(y)} labels)")
    if not 0 <= noise < 1:
        raise ValueError(f"the injected weight noise is relative to the largest weight: 0 <= noise < 1, not {noise}")
    if clip_sigma < 0:
        raise ValueError(f"clip_sigma is a number of standard deviations (0: no clipping), not {clip_sigma}")
    teacher = None
    if distill:
        from hwnas.tasks.evaluate import run_model

        teacher = run_model(graph, x)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = to_analog(graph, target, compensation=compensation)
            if not model.layers:
                raise ValueError("no layer is on analog tiles, so there is nothing to train for them")
            inject_noise(model, noise, clip_sigma)
            losses = _train(model, x, y, teacher, config, progress)
    finally:
        torch.set_num_threads(threads)
    model.module.eval()
    return HWATrained(model, losses)


def inject_noise(model: AnalogModel, noise: float, clip_sigma: float = 0.0) -> None:
    """Set every analog tile to train with additive Gaussian weight noise of std `noise` x its
    largest |weight| (aihwkit's ADD_NORMAL modifier; 0 turns it off), and after each step to clip
    its weights at `clip_sigma` standard deviations (0: no clipping) and remap its columns to
    [-1, 1] (scales move to the digital periphery): outliers no longer set the conductance range."""
    from aihwkit.simulator.parameters import WeightClipParameter, WeightModifierParameter, WeightRemapParameter
    from aihwkit.simulator.parameters.enums import WeightClipType, WeightModifierType, WeightRemapType

    for layer in model.layers.values():
        for tile in layer.analog_tiles():  # type: ignore[operator]
            kind = WeightModifierType.ADD_NORMAL if noise > 0 else WeightModifierType.NONE
            tile.rpu_config.modifier = WeightModifierParameter(type=kind, std_dev=noise, rel_to_actual_wmax=True)
            tile.rpu_config.clip = WeightClipParameter(
                type=WeightClipType.LAYER_GAUSSIAN if clip_sigma > 0 else WeightClipType.NONE, sigma=clip_sigma)
            tile.rpu_config.remap = WeightRemapParameter(remapped_wmax=1.0, type=WeightRemapType.CHANNELWISE_SYMMETRIC)
            tile.__dict__.pop("_tmp", None)  # aihwkit's cached bindings of the old settings
            tile.post_update_step()  # the first step already sees noise


def _train(model: AnalogModel, x: np.ndarray, y: np.ndarray, teacher: np.ndarray | None, config: FinetuneConfig,
           progress: Callable[[int, int, float], None] | None) -> list[float]:
    """Fine-tuning's loop (`train_loop`) on the analog module, with aihwkit's AnalogAdam; the
    BatchNorm running statistics stay as they are."""
    from aihwkit.optim import AnalogAdam

    if training_steps(len(x), config) == 0:
        return []
    module = model.module
    opt = AnalogAdam(module.trainable(), lr=config.lr, weight_decay=config.weight_decay)
    opt.regroup_param_groups(module)
    return train_loop(module, opt, (x, y), config, teacher_logits=teacher, progress=progress)
