"""Tasks: real pretrained or trained models on real data, registered by name and scored in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import numpy_helper

from hwnas.backends.emit.onnx import to_onnx
from hwnas.frontends.onnx import import_onnx
from hwnas.ir.verifier import verify
from hwnas.passes.bind_dims import BindDims
from hwnas.tasks import BATCH_DIM, Metric, Task, load_task, register_task, task_names
from hwnas.tasks.digits_cnn import load as digits_cnn
from hwnas.tasks.efficientnet_lite0 import load as efficientnet_lite0
from hwnas.tasks.evaluate import evaluate, output_kl, predict
from hwnas.tasks.mnist_cnn import load as mnist_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mnist() -> Task:
    return mnist_cnn()


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tasks")


@pytest.fixture(scope="module")
def digits(digits_cache: Path) -> Task:
    """Trained here, not taken from the user's cache (~3 s)."""
    return digits_cnn(cache_dir=digits_cache)


@pytest.fixture(scope="module")
def effnet() -> Task:
    return efficientnet_lite0(num_photos=2)


def test_mnist_cnn_scores_on_its_test_half(mnist: Task) -> None:
    x, y = mnist.test
    assert x.shape == (2500, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [250] * 10  # stratified halves of 500 a class
    assert mnist.graph.inputs[0].type is not None and mnist.graph.inputs[0].type.shape == (BATCH_DIM, 1, 28, 28)
    verify(mnist.graph)
    assert evaluate(mnist.graph, mnist) >= 0.99


def test_digits_cnn_trains_and_caches(digits: Task, digits_cache: Path) -> None:
    assert evaluate(digits.graph, digits) >= 0.95
    assert digits.train[0].shape == (1257, 1, 8, 8) and digits.test[0].shape == (540, 1, 8, 8)
    ops = {n.op for n in digits.graph.nodes}
    assert {"BatchNormalization", "Add", "GlobalAveragePool"} <= ops  # what the pruning pass is tested on
    verify(digits.graph)
    (cached,) = digits_cache.iterdir()
    assert cached.name == "digits-cnn-v1-seed0-epochs15-test0.3.pt"
    again = digits_cnn(cache_dir=digits_cache)
    for a, b in zip(digits.module.state_dict().values(), again.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["mnist", "digits", "effnet"])
def test_graph_agrees_with_the_torch_module(name: str, request: pytest.FixtureRequest) -> None:
    task: Task = request.getfixturevalue(name)
    x = task.test[0][:16]
    assert task.module is not None
    with torch.no_grad():
        expected = task.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predict(task.graph, task, batch=5)[:16], expected, atol=1e-4, rtol=0)


def test_efficientnet_sees_a_cat_in_chelsea(effnet: Task) -> None:
    assert effnet.metric is Metric.AGREEMENT and effnet.num_classes == 1000 and effnet.sample_size == 10
    assert len(effnet.train[0]) == len(effnet.test[0]) == 10  # one photo a split, ten views each
    assert effnet.train[0].shape[1:] == (3, 224, 224)
    chelsea = [i for i, name in enumerate(effnet.ids["train"]) if name.startswith("chelsea/")]
    assert len(chelsea) == 10
    top1 = effnet.reference_logits("train")[chelsea].argmax(axis=1)
    assert np.isin(top1, range(281, 286)).all(), top1  # tabby, tiger, Persian, Siamese, Egyptian cat
    assert np.array_equal(effnet.train[1], effnet.reference_logits("train").argmax(axis=1))
    assert evaluate(effnet.graph, effnet) == 1.0
    assert output_kl(effnet.graph, effnet) < 1e-6


def test_evaluate_takes_onnx_models_and_static_batches(digits: Task) -> None:
    model = to_onnx(digits.graph)
    assert evaluate(model, digits) == evaluate(digits.graph, digits)
    # 540 test digits, 7 at a time: the last chunk is padded and trimmed.
    static = BindDims(7).run(import_onnx(model)).graph
    assert evaluate(static, digits) == evaluate(digits.graph, digits)


def test_output_kl_sees_a_perturbed_model(digits: Task) -> None:
    model = to_onnx(digits.graph)
    assert output_kl(model, digits) < 1e-6
    fc_bias = next(t for t in model.graph.initializer if t.name == "fc.bias")
    bias = numpy_helper.to_array(fc_bias).copy()
    bias[3] += 10.0  # every digit drifts towards a 3
    fc_bias.CopyFrom(numpy_helper.from_array(bias, fc_bias.name))
    assert output_kl(model, digits) > 0.01
    assert evaluate(model, digits) < evaluate(digits.graph, digits)


def test_tasks_load_by_name(digits_cache: Path) -> None:
    assert task_names() == ("digits-cnn", "efficientnet-lite0", "mnist-cnn")
    assert load_task("digits-cnn", cache_dir=digits_cache).name == "digits-cnn"  # cached by now
    with pytest.raises(ValueError, match=r"unknown task 'resnet' \(known: digits-cnn, efficientnet-lite0, mnist-cnn\)"):
        load_task("resnet")


def test_a_name_registers_once() -> None:
    with pytest.raises(ValueError, match="task 'digits-cnn' is already registered"):
        register_task("digits-cnn")(digits_cnn)


def test_score_follows_the_metric(digits: Task) -> None:
    """Accuracy compares top-1 with the labels; agreement with the fp32 model's own top-1."""
    logits = digits.reference_logits("test")
    assert digits.score(logits) == evaluate(digits.graph, digits)
    agree = Task("agree", digits.graph, digits.train, digits.test, Metric.AGREEMENT, 10, digits.module)
    assert agree.score(logits) == 1.0
    assert np.array_equal(agree.expected(), logits.argmax(1))
    shuffled = np.roll(logits, 1, axis=1)  # every top-1 moves to the next class
    assert agree.score(shuffled) == 0.0 and digits.score(shuffled) < 0.2


def test_importing_the_registry_loads_neither_torch_nor_onnxruntime() -> None:
    """`hwnas --help` builds the compress parser from the registry: it must stay fast."""
    import subprocess
    import sys

    code = "import sys, hwnas.tasks; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
