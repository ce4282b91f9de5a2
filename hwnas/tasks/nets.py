"""The torch modules of the bundled tasks that hwnas defines itself, and running a module for
reference logits."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class MnistCNN(nn.Module):
    """ccexam's MNIST classifier, rebuilt here (ccexam's own modules import torchvision); the
    submodule indices match its state_dict keys."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of 1x28x28 digits."""
        return self.classifier(self.features(x).flatten(1))


class DigitsCNN(nn.Module):
    """conv-bn-relu x2, max-pool, a residual block (two conv-bn, Add, relu), conv-bn-relu,
    global average pool, linear: ~43k parameters for 1x8x8 digits. BatchNorm and the
    residual Add are there because the pruning and quantization passes must handle them."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(1, 16), nn.ReLU(), *_conv_bn(16, 32), nn.ReLU(), nn.MaxPool2d(2))
        self.block = nn.Sequential(*_conv_bn(32, 32), nn.ReLU(), *_conv_bn(32, 32))
        self.head = nn.Sequential(*_conv_bn(32, 64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of 1x8x8 digits."""
        x = self.stem(x)
        x = torch.relu(self.block(x) + x)
        return self.fc(self.head(x))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]


def module_logits(module: nn.Module, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The module's outputs on `x`, `batch` samples at a time, in eval mode without gradients."""
    module.eval()
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)])
