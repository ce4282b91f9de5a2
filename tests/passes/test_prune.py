"""Pruning passes: unstructured magnitude pruning, and channel pruning that physically
removes channels through BatchNorm, depthwise convs, residual Adds, Concat, Split and
Flatten→Gemm, on small nets and on ResNet-50 (light) and a MobileNetV2-like net."""

from __future__ import annotations

import copy
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.cli import main
from hwnas.errors import PipelineError
from hwnas.frontends import load_graph
from hwnas.ir.attributes import Attr
from hwnas.ir.registry import op_counts
from hwnas.ir.verifier import verify
from hwnas.passes import parse_pipeline
from hwnas.passes.channels import ChannelAnalysis, channel_groups, private_weights, weight_nodes
from hwnas.passes.prune_channels import prune_channels
from hwnas.passes.prune_policy import run_graph, sample_feeds, sensitivity_ratios
from hwnas.search.spaces import to_graph
from hwnas.search.spaces.mobilenetv2 import MBConfig, build
from tests.backends.graphs import Builder

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend/test/data/light"
EXAMPLE = Path(__file__).parents[2] / "examples" / "small_cnn.onnx"


class Net(nn.Module):
    """Every coupling the channel analysis knows: BN, depthwise, a residual Add, Concat of
    two convs, a Split of one conv into two paths, a grouped conv, Flatten into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.dw, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16)
        self.pw, self.bn3 = nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16)
        self.a, self.b = nn.Conv2d(16, 8, 3, padding=1), nn.Conv2d(16, 8, 1)
        self.e, self.f = nn.Conv2d(16, 24, 1), nn.Conv2d(16, 8, 3, padding=1)
        self.h = nn.Conv2d(16, 16, 3, padding=1, stride=2)
        self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.fc = nn.Linear(16 * 4, 10)
        for bn in (self.bn1, self.bn2, self.bn3):  # non-trivial statistics, as after training
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.stem(x)))
        z = F.relu(self.bn2(self.dw(y)))
        y = F.relu(self.bn3(self.pw(z)) + y)
        c = torch.cat([F.relu(self.a(y)), F.relu(self.b(y))], 1)
        s1, s2 = torch.split(self.e(c), [8, 16], dim=1)
        t = torch.cat([F.relu(s1), F.relu(self.f(s2))], 1)
        u = F.adaptive_avg_pool2d(F.relu(self.g(F.relu(self.h(t)))), 2)
        return self.fc(torch.flatten(u, 1))


def _net_graph():  # noqa: ANN202
    return to_graph(Net(), (2, 3, 16, 16), "net")


def _params(graph) -> int:  # noqa: ANN001
    return sum(c.params for n in graph.nodes if (c := op_counts(n)) is not None)


def _macs(graph) -> int:  # noqa: ANN001
    return sum(c.macs for n in graph.nodes if (c := op_counts(n)) is not None)


def _kill(graph, ratio: float, seed: int = 0) -> None:  # noqa: ANN001
    """Makes exactly the channels prune_channels(ratio) will remove dead: zero filters and
    biases in every source of the group, zero BN shift and mean, so they carry zeros."""
    private_weights(graph)  # as prune_channels does first, so the components are the same
    a = ChannelAnalysis(graph)
    rng = np.random.default_rng(seed)
    dead = np.zeros(a.n_components, bool)
    for g in a.groups():
        k = min(math.floor(ratio * g.channels + 1e-9), len(g.components), g.channels - 1)
        if k > 0:
            dead[rng.choice(g.components, k, replace=False)] = True
    for s in a.slices:
        n = s.node
        out_side = n.op in ("Conv", "Gemm", "MatMul") and s.value is n.outputs[0]
        if not (out_side or (n.op == "BatchNormalization" and s.index in (2, 3))):
            continue
        idx = np.flatnonzero(dead[a.label[a.atoms(s.value)]])
        w = n.input(s.index).const.copy()
        np.moveaxis(w, s.axis, 0)[idx] = 0
        n.set_input(s.index, graph.add_constant(w, "killed"))


def test_groups_follow_the_couplings() -> None:
    groups = {g.sources: g for g in channel_groups(_net_graph())}
    by_source = {s: g for g in groups.values() for s in g.sources}
    stem = next(g for s, g in by_source.items() if "stem" in s)
    assert any("pw" in s for s in stem.sources), "the residual Add ties stem and pw"
    assert not any("dw" in s for s in stem.sources), "a depthwise conv passes channels through"
    assert stem.channels == 16 and len(stem.components) == 16
    a = next(g for s, g in by_source.items() if "/a/" in s)
    b = next(g for s, g in by_source.items() if "/b/" in s)
    assert a is not b and a.channels == b.channels == 8, "Concat inputs are pruned each on its own"
    e = next(g for s, g in by_source.items() if "/e/" in s)
    assert e.channels == 24
    fc = next(g for s, g in by_source.items() if "fc" in s)
    assert fc.components == [] and fc.kept == 10, "a graph output keeps its channels"


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_removing_dead_channels_keeps_outputs(ratio: float) -> None:
    """torch's exporter folds BatchNorm into the convs; small_cnn keeps its BNs."""
    graph = load_graph(EXAMPLE)
    assert any(n.op == "BatchNormalization" for n in graph.nodes)
    _kill(graph, ratio)
    feeds = sample_feeds(graph, 2, 0)
    before = run_graph(graph, feeds)[0]
    prune_channels(graph, ratio, "l1")
    verify(graph)
    np.testing.assert_allclose(run_graph(graph, feeds)[0], before, atol=1e-5)
    graph = _net_graph()
    _kill(graph, ratio)
    feeds = sample_feeds(graph, 2, 0)
    before, params, macs = run_graph(graph, feeds)[0], _params(graph), _macs(graph)
    removed = prune_channels(graph, ratio, "l1")
    verify(graph)
    after = run_graph(graph, feeds)[0]
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert sum(removed.values()) > 0
    assert _params(graph) < params * (1 - ratio / 2) and _macs(graph) < macs * (1 - ratio / 2)
    dw = next(n for n in graph.nodes if n.op == "Conv" and "dw" in n.name)
    assert dw.attr("group") == dw.input(1).const.shape[0] == 16 - math.floor(ratio * 16)
    fc = next(n for n in graph.nodes if n.op == "Gemm")
    assert fc.input(1).const.shape[1] == 4 * (16 - math.floor(ratio * 16)), "Flatten→Gemm features follow"
    split = next(n for n in graph.nodes if n.op == "Split")
    assert sum(split.input(1).const) == next(n for n in graph.nodes if "/e/" in n.name).input(1).const.shape[0]


def test_grouped_conv_prunes_every_group_alike() -> None:
    b = Builder((1, 8, 8, 8))
    y = b.op("Relu", b.conv(b.x, 16, name="c1"))
    y = b.op("Relu", b.conv(y, 16, group=4, name="grouped"))
    y = b.conv(y, 16, name="c3")
    b.g.outputs.append(b.op("Relu", y))
    groups = {g.name: g for g in channel_groups(b.g)}
    assert len(groups["c1"].components) == 4, "position p of each of the 4 groups goes together"
    assert len(groups["grouped"].components) == 4
    feeds = sample_feeds(b.g, 1, 0)
    prune_channels(b.g, 0.5)
    verify(b.g)
    w = b.g.node_by_name("grouped").input(1).const
    assert w.shape[:2] == (8, 2) and b.g.node_by_name("grouped").attr("group") == 4
    assert b.g.node_by_name("c1").input(1).const.shape[0] == 8
    assert b.g.node_by_name("c3").input(1).const.shape[1] == 8
    assert run_graph(b.g, feeds)[0].shape == (1, 16, 8, 8)


def test_mobilenetv2_like_net_and_resnet50_light_get_smaller() -> None:
    mbv2 = to_graph(build(MBConfig(width=0.5, resolution=96)), (1, 3, 96, 96), "mbv2")
    r50 = parse_pipeline("fold-constants").run(load_graph(LIGHT / "light_resnet50.onnx")).graph
    for graph in (mbv2, r50):
        feeds = sample_feeds(graph, 1, 0)
        params, macs = _params(graph), _macs(graph)
        out = parse_pipeline("prune-channels{ratio=0.5}").run(graph).graph
        verify(out)
        y = run_graph(out, feeds)[0]
        assert y.shape == (1, 1000) and np.isfinite(y).all()
        assert _params(out) < 0.5 * params and _macs(out) < 0.4 * macs, graph.name


def test_given_ratios_per_layer_and_unknown_layer() -> None:
    graph = _net_graph()
    a = next(n.name for n in graph.nodes if "/a/" in n.name)
    out = parse_pipeline(f'prune-channels{{policy=given,ratios="{a}=0.5"}}').run(graph).graph
    assert next(n for n in out.nodes if n.name == a).input(1).const.shape[0] == 4
    assert next(n for n in out.nodes if "/b/" in n.name).input(1).const.shape[0] == 8
    with pytest.raises(PipelineError, match=rf"no prunable layer named 'nope' \(prunable: .*{re.escape(a)}, .* and 1 "
                                            r"more\)"):
        prune_channels(_net_graph(), {"nope": 0.5})


def test_sensitivity_policy_spends_the_uniform_budget_on_the_least_sensitive_groups() -> None:
    graph = _net_graph()
    groups = {g.name: g for g in channel_groups(graph) if g.components}
    ratios = sensitivity_ratios(graph, 0.5, samples=4)
    budget = sum(min(math.floor(0.5 * g.channels), g.channels - 1) * g.cost for g in groups.values())
    spent = sum(min(math.floor(r * groups[n].channels + 1e-9), groups[n].channels - 1) * groups[n].cost
                for n, r in ratios.items())
    assert spent >= budget
    assert len(set(ratios.values())) > 1, ratios
    feeds = sample_feeds(graph, 4, 1)
    ref = run_graph(graph, feeds)[0]
    out = parse_pipeline("prune-channels{ratio=0.5,policy=sensitivity,samples=4}").run(_net_graph()).graph
    verify(out)
    assert run_graph(out, feeds)[0].shape == ref.shape


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_magnitude(scope: str) -> None:
    graph = load_graph(EXAMPLE)
    feeds = sample_feeds(graph, 1, 0)
    total = sum(n.input(1).const.size for n in weight_nodes(graph))
    out = parse_pipeline(f"prune-magnitude{{sparsity=0.6,scope={scope}}}").run(graph).graph
    zeros = [int((n.input(1).const == 0).sum()) for n in weight_nodes(out)]
    sizes = [n.input(1).const.size for n in weight_nodes(out)]
    assert abs(sum(zeros) / total - 0.6) < 0.01
    if scope == "layer":
        assert all(abs(z / s - 0.6) < 0.05 for z, s in zip(zeros, sizes, strict=True))
    else:
        assert len({round(z / s, 2) for z, s in zip(zeros, sizes, strict=True)}) > 1
    for n, z, size in zip(weight_nodes(out), zeros, sizes, strict=True):
        assert n.ann.sparsity.weight_sparsity == pytest.approx(z / size)
    assert run_graph(out, feeds)[0].shape == (1, 10)


@pytest.mark.parametrize("spec", ["prune-channels{ratio=1.0}", "prune-channels{ratio=-0.1}",
                                  "prune-magnitude{sparsity=1.5}", "prune-channels{criterion=taylor}"])
def test_bad_options_are_one_line(spec: str) -> None:
    with pytest.raises(PipelineError) as e:
        parse_pipeline(spec)
    assert "\n" not in str(e.value)


def test_cli_prunes_and_refuses_bad_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.onnx"
    assert main(["opt", str(EXAMPLE), "-p", "prune-channels{ratio=0.5}", "-o", str(out), "--verify"]) == 0
    pruned = load_graph(out)
    assert _params(pruned) < 0.6 * _params(load_graph(EXAMPLE))
    bad = tmp_path / "bad.onnx"
    capsys.readouterr()
    assert main(["opt", str(EXAMPLE), "-p", "prune-channels{ratio=1.2}", "-o", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ratio must be in [0, 1)" in err[0]
    assert not bad.exists()
    assert main(["opt", str(EXAMPLE), "-p", 'prune-channels{policy=given,ratios="nope=0.5"}', "-o", str(bad)]) == 2
    assert "no prunable layer named 'nope'" in capsys.readouterr().err
    assert not bad.exists()


def test_cli_sensitivity_policy_reads_calibration_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calib, out = tmp_path / "calib.npz", tmp_path / "s.onnx"
    np.savez(calib, image=np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    spec = "prune-channels{ratio=0.5,policy=sensitivity,samples=4}"
    assert main(["opt", str(EXAMPLE), "-p", spec, "--calib-data", str(calib), "-o", str(out), "--verify"]) == 0
    assert _params(load_graph(out)) < _params(load_graph(EXAMPLE))
    np.savez(calib, image=np.zeros((4, 3, 16, 16), np.float32))
    capsys.readouterr()
    assert main(["opt", str(EXAMPLE), "-p", spec, "--calib-data", str(calib), "-o", str(tmp_path / "bad.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has shape (4, 3, 16, 16)" in err[0], err
    assert not (tmp_path / "bad.onnx").exists()


def test_multiple_rounds_kept_channels() -> None:
    graph = to_graph(build(MBConfig(width=0.5, resolution=96)), (1, 3, 96, 96), "mbv2")
    before = {g.name: g.channels for g in channel_groups(graph) if g.components}
    removed = parse_pipeline("prune-channels{ratio=0.3,multiple=8}").run(graph).graph
    after = {g.name: g.channels for g in channel_groups(removed)}
    for name, n in before.items():
        kept = after[name] if name in after else n
        assert kept == n or kept % 8 == 0, (name, n, kept)
    assert any(after[name] < n for name, n in before.items() if name in after)


def test_stepwise_pruning_lands_where_one_cut_would() -> None:
    from hwnas.passes.prune_channels import ratios_toward

    graph = to_graph(build(MBConfig(width=0.5, resolution=96)), (1, 3, 96, 96), "mbv2")
    original = {g.name: g.channels for g in channel_groups(graph)}
    one_cut = copy.deepcopy(graph)
    prune_channels(one_cut, 0.5, "l1", 8)
    for target in (0.1, 0.2, 0.3, 0.4, 0.5):
        prune_channels(graph, ratios_toward(graph, original, target), "l1", 8)
    steps = {g.name: g.channels for g in channel_groups(graph)}
    assert steps == {g.name: g.channels for g in channel_groups(one_cut)}
    assert sum(steps.values()) < 0.6 * sum(original.values())


def test_prune_magnitude_reaches_run_time_weights_and_is_honest_about_changes(
        light_model_paths: dict[str, str]) -> None:
    graph = load_graph(light_model_paths["squeezenet"])
    assert not weight_nodes(graph), "the light models build their weights with ConstantOfShape"
    p = parse_pipeline("prune-magnitude{sparsity=0.3}")
    assert p.run(graph).changed and weight_nodes(graph)
    assert all(n.ann.sparsity is not None for n in weight_nodes(graph))
    assert p.run(graph).changed is False


def test_prune_channels_reports_changes_honestly(light_model_paths: dict[str, str]) -> None:
    graph = load_graph(light_model_paths["squeezenet"])
    nothing = parse_pipeline("prune-channels{ratio=0.0}")
    assert nothing.run(graph).changed, "folding the run-time weights is a change"
    assert nothing.run(graph).changed is False
    assert parse_pipeline("prune-channels{ratio=0.5}").run(graph).changed


def test_ratios_imply_policy_given_and_refuse_what_they_would_ignore() -> None:
    graph = _net_graph()
    a = next(n.name for n in graph.nodes if "/a/" in n.name)
    p = parse_pipeline(f'prune-channels{{ratios="{a}=0.5"}}')
    assert p.spec() == f'prune-channels{{policy=given,ratios="{a}=0.5"}}'
    assert parse_pipeline(p.spec()).spec() == p.spec()
    out = p.run(graph).graph
    widths = {n.name: n.input(1).const.shape[0] for n in out.nodes if n.op == "Conv"}
    assert widths[a] == 4, "the named layer loses half"
    assert all(w == {"/stem/Conv": 16, "/pw/Conv": 16, "/b/Conv": 8, "/e/Conv": 24, "/f/Conv": 8}.get(name, w)
               for name, w in widths.items()), f"layers not named stay whole: {widths}"
    for spec, message in [(f'prune-channels{{ratio=0.3,ratios="{a}=0.5"}}', "ratio= is unused beside ratios="),
                          (f'prune-channels{{policy=sensitivity,ratios="{a}=0.5"}}', "policy=sensitivity")]:
        with pytest.raises(PipelineError, match=message) as e:
            parse_pipeline(spec)
        assert "\n" not in str(e.value)


def _blocked_net():  # noqa: ANN202
    """c1 feeds a Softmax over channels (no channel rule slices it); c2 is a graph output; c3 is free."""
    b = Builder((1, 3, 8, 8))
    x = b.conv(b.x, 8, name="c1")
    soft = b.op("Softmax", x, name="soft", axis=Attr.int(1))
    y = b.conv(b.op("Relu", x, name="r1"), 8, name="c3")
    return b.done(b.conv(b.op("Relu", y, name="r3"), 4, name="c2"), soft)


def test_named_layers_that_keep_channels_say_which_and_why() -> None:
    spec = 'prune-channels{ratios="c1=0.5;c2=0.5;c3=0.25",multiple=8}'
    with pytest.warns(UserWarning) as caught:
        out = parse_pipeline(spec).run(_blocked_net()).graph
    lines = sorted(str(w.message) for w in caught)
    assert len(lines) == 3, lines
    assert "layer 'c1' loses 0 of its 8 channels" in lines[0] and "Softmax node 'soft' reads them" in lines[0]
    assert "layer 'c2' loses 0 of its 4 channels" in lines[1] and "graph output 'c2_y'" in lines[1]
    assert "layer 'c3'" in lines[2] and "round up to a multiple of 8" in lines[2]
    assert {n.name: n.input(1).const.shape[0] for n in out.nodes if n.op == "Conv"} == {"c1": 8, "c3": 8, "c2": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a layer that loses what it was asked to says nothing
        parse_pipeline('prune-channels{ratios="c3=0.5"}').run(_blocked_net())
    for name, message in [("r1", "'r1' is a Relu node, not a layer"), ("nope", "no prunable layer named 'nope'")]:
        with pytest.raises(PipelineError, match=message):
            parse_pipeline(f'prune-channels{{ratios="{name}=0.5"}}').run(_blocked_net())


def test_cli_prints_one_warning_line_per_layer_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = load_graph(EXAMPLE)
    convs = [n.name for n in graph.nodes if n.op in ("Conv", "Gemm")]
    last = convs[-1]
    out = tmp_path / "p.onnx"
    assert main(["opt", str(EXAMPLE), "-p", f'prune-channels{{ratios="{convs[0]}=0.5;{last}=0.5"}}',
                 "-o", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hwnas: warning")]
    assert len(err) == 1 and f"layer '{last}' loses 0" in err[0] and "graph output" in err[0], err
    pruned = {n.name: n.input(1).const.shape[0] for n in load_graph(out).nodes if n.name in convs}
    assert pruned[convs[0]] == graph.node_by_name(convs[0]).input(1).const.shape[0] // 2


def _prelu_net(slope_shape: tuple[int, ...]):  # noqa: ANN202
    """Conv (8 channels) -> PRelu with a slope of `slope_shape` -> Conv, on 8x8 images."""
    from onnx import TensorProto, helper, numpy_helper

    from hwnas.frontends.onnx import import_onnx

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), name) for name, a in (
        ("w1", rng.standard_normal((8, 3, 3, 3))), ("b1", rng.standard_normal(8)),
        ("slope", rng.uniform(0.1, 0.5, slope_shape)), ("w2", rng.standard_normal((4, 8, 1, 1))))]
    g = helper.make_graph([helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="c1"),
                           helper.make_node("PRelu", ["c", "slope"], ["p"], name="prelu"),
                           helper.make_node("Conv", ["p", "w2"], ["y"], name="c2")], "prelu",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=inits)
    return import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("slope_shape", [(1, 8, 1, 1), (8, 1, 1), (1,)])
def test_prelu_slopes_are_pruned_on_the_axis_that_meets_the_channels(slope_shape: tuple[int, ...]) -> None:
    """A (1, C, 1, 1) slope (Keras exports: MTCNN) crashed channel pruning, which sliced its
    first axis; each form that broadcasts per channel is sliced where it meets the channels."""
    graph = _prelu_net(slope_shape)
    _kill(graph, 0.5)
    feeds = sample_feeds(graph, 2, 0)
    before = run_graph(graph, feeds)[0]
    assert prune_channels(graph, 0.5, "l1") == {"c1": 4}
    verify(graph)
    np.testing.assert_allclose(run_graph(graph, feeds)[0], before, atol=1e-5)
    slope = next(n for n in graph.nodes if n.op == "PRelu").input(1).const
    assert slope.shape == (tuple(4 if d == 8 else d for d in slope_shape))


def test_a_slope_that_varies_along_the_width_keeps_the_channels() -> None:
    """An (8,) slope against an 8x8 NCHW image lines up with the width, not the channels."""
    graph = _prelu_net((8,))
    assert prune_channels(graph, 0.5, "l1") == {}
    assert next(n for n in graph.nodes if n.op == "PRelu").input(1).const.shape == (8,)
