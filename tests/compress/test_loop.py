"""Fine-tuning (labels, distillation) through the torch emission and the prune → fine-tune →
check loop, on the digits CNN that hwnas trains on scikit-learn's real digits."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from hwnas.backends.emit.onnx import save_onnx
from hwnas.cli import main
from hwnas.compress.finetune import FinetuneConfig, finetune
from hwnas.compress.loop import compress, size
from hwnas.passes.prune_channels import prune_channels
from hwnas.tasks import Task
from hwnas.tasks.data import task_from_data
from hwnas.tasks.digits_cnn import load as digits_cnn
from hwnas.tasks.evaluate import evaluate, output_kl, predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits() -> Task:
    return digits_cnn()


def test_fine_tuning_recovers_accuracy_lost_to_pruning(digits: Task) -> None:
    graph = copy.deepcopy(digits.graph)
    prune_channels(graph, 0.5)
    pruned = evaluate(graph, digits)
    losses = finetune(graph, digits.train, FinetuneConfig(epochs=3, kd_alpha=0.0))
    assert losses[-1] < losses[0]
    tuned = evaluate(graph, digits)
    assert pruned < 0.9 and tuned > 0.95 and tuned > pruned + 0.05


def test_distillation_pulls_the_student_towards_the_teacher(digits: Task) -> None:
    pruned = copy.deepcopy(digits.graph)
    prune_channels(pruned, 0.6)
    teacher = predict(digits.graph, digits, "train")
    before = output_kl(pruned, digits)
    labels_only, distilled = copy.deepcopy(pruned), copy.deepcopy(pruned)
    finetune(labels_only, digits.train, FinetuneConfig(epochs=6, kd_alpha=0.0))
    finetune(distilled, digits.train, FinetuneConfig(epochs=6, kd_alpha=1.0, temperature=2.0), teacher_logits=teacher)
    assert output_kl(distilled, digits) < before / 10
    assert output_kl(distilled, digits) < 0.9 * output_kl(labels_only, digits)


def test_loop_stops_at_the_tolerance(digits: Task) -> None:
    seen = []
    result = compress(digits, tolerance=0.01, step=0.2, finetune_config=FinetuneConfig(epochs=2), on_step=seen.append)
    assert seen == result.steps and result.steps
    kept = [s for s in result.steps if s.accepted]
    assert all(result.baseline_val - s.val <= 0.01 + 1e-12 for s in kept)
    assert result.steps[-1].accepted is False or result.steps[-1].ratio >= 0.8
    assert result.params[1] < result.params[0] and result.macs[1] < result.macs[0]
    assert size(result.graph) == (result.params[1], result.macs[1])
    assert evaluate(result.graph, digits) == result.test
    assert size(digits.graph)[0] == result.params[0], "the task's graph is left as it was"


@pytest.fixture()
def digits_files(digits: Task, tmp_path: Path) -> tuple[Path, Path]:
    model, data = tmp_path / "digits.onnx", tmp_path / "digits.npz"
    save_onnx(digits.graph, model)
    np.savez(data, x=digits.train[0], y=digits.train[1], x_test=digits.test[0], y_test=digits.test[1])
    return model, data


def test_cli_compresses_a_model_with_a_data_file(digits_files: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    model, data = digits_files
    out, report = tmp_path / "out.onnx", tmp_path / "out.json"
    assert main(["compress", str(model), "--data", str(data), "-o", str(out), "--json", str(report),
                 "--step", "0.25", "--epochs", "1", "--tolerance", "2"]) == 0
    figures = json.loads(report.read_text())
    assert figures["steps"] and figures["params"][1] <= figures["params"][0]
    assert "prune → fine-tune → check" in capsys.readouterr().out
    from hwnas.frontends import load_graph

    task = task_from_data(load_graph(model), data)
    assert evaluate(load_graph(out), task) == pytest.approx(figures["test"])


@pytest.mark.parametrize("case", ["shape", "no-y", "labels", "missing", "both", "step", "bits"])
def test_cli_bad_data_is_one_line_and_writes_nothing(case: str, digits_files: tuple[Path, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    model, data = digits_files
    bad = tmp_path / "bad.npz"
    x, y = np.load(data)["x"], np.load(data)["y"]
    expected = {"shape": "'x' has shape [1257, 1, 9, 8]", "no-y": "missing array 'y'",
                "labels": "labels outside 0..9", "missing": "no such data file", "both": "either MODEL",
                "step": "--step must be in (0, 1), not 1.5",
                "bits": "--quantize must be 2 to 8 or 16 bits, not 9"}[case]
    if case == "shape":
        np.savez(bad, x=np.zeros((len(x), 1, 9, 8), np.float32), y=y)
    elif case == "no-y":
        np.savez(bad, x=x)
    elif case == "labels":
        np.savez(bad, x=x, y=y + 5)
    args = ["compress", str(model), "--data", str(bad), "-o", str(tmp_path / "o.onnx")]
    if case in ("step", "bits"):
        np.savez(bad, x=x, y=y)
        args += ["--step", "1.5"] if case == "step" else ["--quantize", "9"]
    if case == "both":
        args += ["--subject", "digits-cnn"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "o.onnx").exists()


def test_cli_compress_then_quantize_writes_qdq(tmp_path: Path, digits: Task) -> None:
    import onnx

    out, report = tmp_path / "q.onnx", tmp_path / "q.json"
    assert main(["compress", "--task", "digits-cnn", "-o", str(out), "--json", str(report), "--step", "0.3",
                 "--max-ratio", "0.3", "--epochs", "1", "--quantize", "8"]) == 0
    figures = json.loads(report.read_text())
    model = onnx.load(out)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    assert figures["quantized"]["bits"] == 8
    assert evaluate(model, digits) == pytest.approx(figures["quantized"]["test"], abs=1 / len(digits.test[1]))
    assert figures["quantized"]["test"] > 0.95
