"""A layer-wise MobileNetV2 space: width multiplier, blocks per stage, kernel size and expansion
ratio per stage, and input resolution.

The default `MBConfig` is MobileNetV2 itself (Sandler et al., CVPR 2018), built the way
torchvision builds it (channels rounded to multiples of 8, a 1280-wide last conv that only
grows with width, ReLU6, BN after every conv, dropout 0.2 before the classifier), so its
parameter count matches torchvision's 3,504,872. torchvision is not installable beside our
torch, hence this copy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from hwnas.ir.graph import Graph, Value
from hwnas.search.spaces.ir_build import IRBuilder

# The seven stages of MobileNetV2 (paper, Table 2): expansion t, output channels c, blocks n, stride s.
BASE_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))
NUM_STAGES = len(BASE_STAGES)
KERNELS = (3, 5, 7)
WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
EXPANSIONS = (3, 4, 6)
RESOLUTIONS = (96, 128, 160, 192, 224)
T = TypeVar("T")


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor` without losing more than 10% (torchvision's rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


@dataclass(frozen=True)
class MBConfig:
    """One network of the space: width multiplier, per-stage depth, kernel and expansion
    (seven stages), input resolution. Checked on construction."""

    width: float = 1.0
    depths: tuple[int, ...] = tuple(s[2] for s in BASE_STAGES)
    kernels: tuple[int, ...] = (3,) * NUM_STAGES
    expansions: tuple[int, ...] = tuple(s[0] for s in BASE_STAGES)
    resolution: int = 224
    num_classes: int = 1000

    def __post_init__(self) -> None:
        for name in ("depths", "kernels", "expansions"):
            if len(getattr(self, name)) != NUM_STAGES:
                raise ValueError(f"MBConfig.{name} needs one entry per stage ({NUM_STAGES})")
        if any(k not in KERNELS for k in self.kernels):
            raise ValueError(f"MBConfig.kernels must be in {KERNELS}, not {self.kernels}")
        if any(d < 1 for d in self.depths) or any(e < 1 for e in self.expansions):
            raise ValueError("MBConfig depths and expansions must be at least 1")
        if self.width <= 0 or self.resolution < 32:
            raise ValueError(f"MBConfig needs width > 0 and resolution >= 32, not {self.width}, {self.resolution}")

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """One RGB image at `resolution` (NCHW)."""
        return (1, 3, self.resolution, self.resolution)

    @property
    def name(self) -> str:
        """A short, unique label: mbv2-w1.0-r224-d1234331-k3333333-e1666666."""
        def digits(xs: tuple[int, ...]) -> str:
            return "".join(map(str, xs)) if all(x < 10 for x in xs) else "_".join(map(str, xs))

        return (f"mbv2-w{self.width}-r{self.resolution}-d{digits(self.depths)}-k{digits(self.kernels)}"
                f"-e{digits(self.expansions)}")


def sample(rng: random.Random | np.random.Generator, num_classes: int = 1000) -> MBConfig:
    """A random config: width, resolution, and per stage a depth (base - 1 to base + 1, at least 1),
    a kernel size and an expansion ratio. The first stage keeps expansion 1, as in MobileNetV2."""
    def pick(seq: tuple[T, ...]) -> T:
        i = int(rng.integers(len(seq))) if isinstance(rng, np.random.Generator) else rng.randrange(len(seq))
        return seq[i]

    width = pick(WIDTHS)
    resolution = pick(RESOLUTIONS)
    depths = tuple(pick(tuple(range(max(1, n - 1), n + 2))) for _, _, n, _ in BASE_STAGES)
    kernels = tuple(pick(KERNELS) for _ in BASE_STAGES)
    expansions = (1, *(pick(EXPANSIONS) for _ in BASE_STAGES[1:]))
    return MBConfig(width, depths, kernels, expansions, resolution, num_classes)


class ConvBNReLU6(nn.Sequential):
    """Conv (padding keeps the size at stride 1, no bias), BatchNorm, ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6())


class InvertedResidual(nn.Module):
    """1x1 expand (skipped at ratio 1), depthwise k x k, linear 1x1 project; the residual add
    only where shape allows (stride 1, same channels)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int, kernel: int) -> None:
        super().__init__()
        hidden = int(round(c_in * expansion))
        self.use_residual = stride == 1 and c_in == c_out
        layers: list[nn.Module] = [ConvBNReLU6(c_in, hidden, 1)] if expansion != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, kernel, stride, groups=hidden),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """The network of an `MBConfig`: stem, inverted-residual stages, 1x1 head conv,
    global average pooling, dropout and a linear classifier."""

    def __init__(self, config: MBConfig) -> None:
        super().__init__()
        self.config = config
        self.input_shape = config.input_shape
        c_in = make_divisible(32 * config.width)
        last = make_divisible(1280 * max(1.0, config.width))
        layers: list[nn.Module] = [ConvBNReLU6(3, c_in, 3, 2)]
        for (_, c, _, s), n, k, t in zip(BASE_STAGES, config.depths, config.kernels, config.expansions, strict=True):
            c_out = make_divisible(c * config.width)
            for i in range(n):
                layers.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t, k))
                c_in = c_out
        layers.append(ConvBNReLU6(c_in, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, config.num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialization, so a randomly initialized net has sane activations.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def build(config: MBConfig | None = None) -> MobileNetV2:
    """The network of `config` (MobileNetV2 itself by default), with torchvision's initialization."""
    return MobileNetV2(config or MBConfig())


def _conv_relu6(b: IRBuilder, x: Value, c_out: int, kernel: int, stride: int, name: str, groups: int = 1) -> Value:
    return b.relu6(b.conv(x, c_out, kernel, stride, f"{name}.0", groups=groups), f"{name}.2")


def build_ir(config: MBConfig | None = None, seed: int = 0) -> Graph:
    """The network of `build(config)` as IR, made directly (no tracing): the nodes, order and
    shapes `import_torch` gives for it (BatchNorm folded, ReLU6 as Clip, dropout gone), with
    random weights from `seed`."""
    config = config or MBConfig()
    b = IRBuilder(config.name, config.input_shape, seed)
    c_in = make_divisible(32 * config.width)
    last = make_divisible(1280 * max(1.0, config.width))
    x = _conv_relu6(b, b.input, c_in, 3, 2, "/features/features.0/features.0")
    index = 1
    for (_, c, _, s), n, k, t in zip(BASE_STAGES, config.depths, config.kernels, config.expansions, strict=True):
        c_out = make_divisible(c * config.width)
        for i in range(n):
            stride, hidden, p = s if i == 0 else 1, int(round(c_in * t)), f"/features/features.{index}/conv"
            y, j = x, 0
            if t != 1:
                y, j = _conv_relu6(b, y, hidden, 1, 1, f"{p}/conv.0/conv.0"), 1
            y = _conv_relu6(b, y, hidden, k, stride, f"{p}/conv.{j}/conv.{j}", groups=hidden)
            y = b.conv(y, c_out, 1, 1, f"{p}/conv.{j + 1}")
            x = b.add(x, y, f"/features/features.{index}/Add") if stride == 1 and c_in == c_out else y
            c_in, index = c_out, index + 1
    x = _conv_relu6(b, x, last, 1, 1, f"/features/features.{index}/features.{index}")
    b.classifier(x, config.num_classes, "/classifier/classifier.1")
    return b.graph
