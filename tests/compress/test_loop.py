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


def _ort_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """The file's accuracy as onnxruntime alone computes it, one sample a run (any batch size)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    return float((logits.argmax(1) == y).mean())


def test_cli_quantized_figures_are_the_written_files(tmp_path: Path, digits: Task,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """At 2 bits the QDQ file scores far below the float graph it came from: every figure
    printed and in --json must be the file's."""
    out, report = tmp_path / "q2.onnx", tmp_path / "q2.json"
    assert main(["compress", "--task", "digits-cnn", "-o", str(out), "--json", str(report), "--step", "0.3",
                 "--max-ratio", "0.3", "--epochs", "1", "--quantize", "2"]) == 0
    captured = capsys.readouterr()
    figures = json.loads(report.read_text())
    actual = _ort_accuracy(out, *digits.test)
    assert figures["test"] == figures["quantized"]["test"] == pytest.approx(actual, abs=1e-12)
    printed, said = " ".join(captured.out.split()), " ".join(captured.err.split())  # rich wraps long lines
    assert f"{actual:.2%} as written (2-bit QDQ q2.onnx" in printed
    assert f"{actual:.2%} after quantization-aware training" in said
    assert figures["pruned_test"] - actual > 0.02, "the float figure is not the file's: this test can tell them apart"


def test_multiple_of_8_skips_steps_that_remove_nothing(digits: Task) -> None:
    """digits-cnn has 16- and 32-channel layers: 10% rounds every kept count back up to a
    multiple of 8, which used to stop the loop with nothing pruned."""
    notes: list[str] = []
    result = compress(digits, tolerance=1.0, step=0.1, max_ratio=0.3, multiple=8,
                      finetune_config=FinetuneConfig(epochs=0.5), on_note=notes.append)
    assert notes == result.notes and len(notes) == 1
    assert "pruning to 10% of the channels removes none (kept counts round up to multiples of 8); went on to 20%" \
        in notes[0]
    assert [s.ratio for s in result.steps] == [0.2, 0.3]
    assert 0 < result.steps[0].pruned < result.steps[1].pruned <= 0.3
    assert result.params[1] < result.params[0]
    from hwnas.passes.channels import channel_groups

    before = {g.name: g.channels for g in channel_groups(copy.deepcopy(digits.graph)) if g.components}
    after = {g.name: g.channels for g in channel_groups(result.graph)}
    assert all(after[n] == c or after[n] % 8 == 0 for n, c in before.items()), after
    assert any(after[n] < c for n, c in before.items())


@pytest.mark.parametrize("case", ["proc", "same", "folder"])
def test_cli_refuses_unwritable_outputs_before_any_work(case: str, digits_files: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import time

    model, data = digits_files
    out, report = tmp_path / "o.onnx", tmp_path / "o.json"
    expected = {"proc": "/proc/hwnas-o.json: cannot write", "same": "-o and --json name the same file",
                "folder": "does not exist"}[case]
    if case == "proc":  # writable by its permission bits for root, yet no file can be made there
        report = Path("/proc/hwnas-o.json")
    elif case == "same":
        report = out
    else:
        out = tmp_path / "missing" / "o.onnx"
    start = time.perf_counter()
    assert main(["compress", str(model), "--data", str(data), "-o", str(out), "--json", str(report)]) == 2
    assert time.perf_counter() - start < 5, "refused before loading data and fine-tuning"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["digits.npz", "digits.onnx"]


def test_size_counts_a_spatially_symbolic_model_at_the_datas_shape() -> None:
    """PP-OCR's classifier (x[?, 3, ?, ?]) was reported at 124,072 MACs, its dims counted as 1;
    compress now sizes them from the data's samples."""
    from onnx import TensorProto, helper

    from hwnas.frontends.onnx import import_onnx
    from hwnas.passes.testing import build_model, randn

    m = build_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                    {"x": (TensorProto.FLOAT, [None, 3, "H", "W"])}, ["y"],
                    {"w": randn(np.random.default_rng(0), 4, 3, 3, 3)})
    graph = import_onnx(m)
    assert size(graph, (3, 8, 12)) == (4 * 3 * 3 * 3, 4 * 8 * 12 * 3 * 3 * 3)
    assert size(graph) == (4 * 3 * 3 * 3, 4 * 1 * 1 * 3 * 3 * 3)  # without data: symbolic dims as 1
