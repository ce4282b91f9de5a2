"""Regenerates examples/small_cnn.onnx: a small CNN with BatchNorm, depthwise conv, ReLU6
and HardSwish, exported with its BatchNorms kept so canonicalization has work to do."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
            nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.Hardswish(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def main() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    for mod in model.modules():  # non-trivial statistics, as after training
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    torch.onnx.export(
        model, (torch.randn(1, 3, 32, 32),), "examples/small_cnn.onnx", dynamo=False, opset_version=17,
        input_names=["image"], output_names=["logits"], do_constant_folding=False,
        training=torch.onnx.TrainingMode.PRESERVE,
    )


if __name__ == "__main__":
    main()
