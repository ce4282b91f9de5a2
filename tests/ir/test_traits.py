"""Op traits in the registry: what the cost models, the onnxruntime fusion rules, the frontend
and the channel analysis ask about an op, answered from one place."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from hwnas.backends.cost.base import CostTable
from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Graph, Node
from hwnas.ir.registry import (
    NO_TRAITS,
    Channels,
    OpTraits,
    Pool,
    declare_traits,
    has_traits,
    kernel_kind,
    ops_with,
    registered_ops,
    traits,
    traits_of,
)
from hwnas.ir.types import DType, TensorType


def _conv(group: int, c_out: int) -> Node:
    g = Graph("g")
    x = g.add_input("x", TensorType(DType.FLOAT, (1, 8, 4, 4)))
    w = g.add_constant(np.zeros((c_out, 8 // group, 3, 3), np.float32), "w")
    return g.add_node("Conv", [x, w], attrs={"group": Attr.int(group)},
                      output_types=[TensorType(DType.FLOAT, (1, c_out, 2, 2))])


def test_representative_ops_answer_each_trait() -> None:
    assert traits_of("Reshape").view and traits_of("Identity").view and not traits_of("Transpose").view
    assert traits_of("Relu").elementwise and traits_of("BatchNormalization").elementwise
    assert not traits_of("Softmax").elementwise
    assert traits_of("MaxPool").pool == Pool("max") and traits_of("GlobalAveragePool").pool == Pool("average", True)
    assert traits_of("LpPool").pool == Pool("lp") and traits_of("Conv").pool is None
    assert traits_of("Conv").weight_inputs == (1,) and traits_of("QLinearConv").weight_inputs == (3,)
    assert traits_of("MatMulInteger").has_weights and not traits_of("Add").has_weights
    assert traits_of("Gemm").kernel == "gemm" and traits_of("Concat").kernel == "movement"
    assert traits_of("Softmax").kernel == "other"
    assert traits_of("Relu").channels is Channels.PER_CHANNEL
    assert traits_of("Add").channels is Channels.BROADCAST
    assert traits_of("Shape").channels is Channels.SHAPE_ONLY
    assert traits_of("Conv").channels is Channels.BLOCKS
    assert traits_of("BatchNormalization").channel_params == (1, 2, 3, 4)
    assert traits_of("PRelu").channel_params == (1,)


def test_kernel_kind_is_a_function_of_the_node_for_convolutions() -> None:
    assert kernel_kind(_conv(1, 16)) == "conv"
    assert kernel_kind(_conv(8, 8)) == "depthwise"
    assert kernel_kind(_conv(2, 16)) == "conv", "grouped, not one group per channel"
    assert traits(_conv(1, 16)) is traits_of("Conv")


def test_unknown_ops_and_other_domains_have_no_traits() -> None:
    assert traits_of("NoSuchOp") is NO_TRAITS and not has_traits("NoSuchOp")
    assert traits_of("com.example::Relu") is NO_TRAITS, "a custom domain's Relu is not ONNX's"
    g = Graph("g")
    x = g.add_input("x", TensorType(DType.FLOAT, (1, 2)))
    n = g.add_node("Reshape", [x], domain="com.example")
    assert not traits(n).view and kernel_kind(n) == "other"


def test_every_priced_op_declares_its_traits() -> None:
    declared = ops_with(lambda t: True)
    assert registered_ops() <= declared, sorted(registered_ops() - declared)


@pytest.mark.parametrize("module", ["roofline", "mcu", "fpga", "analog"])
def test_every_op_a_cost_model_prices_has_traits(module: str) -> None:
    mod = importlib.import_module(f"hwnas.backends.cost.{module}")
    tables = [t for t in vars(mod).values() if isinstance(t, CostTable)]
    assert tables, f"{module} has no CostTable"
    for table in tables:
        missing = sorted(op for op in table.ops if op != "*" and not has_traits(op))
        assert not missing, f"{module}: {missing}"


def test_every_op_the_channel_analysis_has_a_rule_for_has_traits() -> None:
    from hwnas.passes.channels import LAYERS, analysis

    ops = [k for k in analysis._RULES if isinstance(k, str)]
    assert set(LAYERS) <= set(ops), "every layer pruning edits has a rule"
    assert not [op for op in ops if not has_traits(op)]
    assert {k for k in analysis._RULES if isinstance(k, Channels)} == set(Channels) - {Channels.BLOCKS}


def test_a_declaration_is_not_silently_overridden() -> None:
    declare_traits(traits_of("Relu"), "Relu")  # the same traits again: harmless
    with pytest.raises(ValueError, match="already has traits"):
        declare_traits(OpTraits(view=True), "Relu")
