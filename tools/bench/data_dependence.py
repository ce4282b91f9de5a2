"""Which onnxruntime CPU kernels take longer on some data than on other data of the same shape?

    .venv/bin/python tools/bench/data_dependence.py [--quick] [--rounds N]

A cost model prices a node from its shapes. That holds only where the kernel's time does not
depend on the values it reads. This benchmark times single-op models (one thread, fp32) on four
inputs of one shape: signs mixed half and half (standard normal, what `hwnas measure` feeds, and
`hwnas calibrate` to every op but PRelu), one-signed (its absolute value), 90% positive (normal +
1.3), and smooth (half and half in patches, as a feature map has its signs:
`hwnas.calibrate.timing.patchy`, what `hwnas calibrate` feeds a PRelu). All are timed side by
side in each round. The slowdown of the mixed input against the one-signed one is
reported as the median and interquartile range of per-round ratios. Beside it is the noise floor:
the one-signed input timed a second time, as a variant of its own.

The finding behind the `PRelu` note of the CPU cost model (`hwnas.backends.cost.roofline`):
onnxruntime's PRelu branches on each element's sign, so a mispredicted branch costs it several
times its branch-free time, while LeakyRelu (the same function with one slope) does not.
Figures: tools/bench/results/data_dependence.{json,md}.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np
from common import Phase, environment, parser, ratio, session, time_rounds, write_json, write_markdown
from onnx import ModelProto, TensorProto, helper, numpy_helper

from hwnas.calibrate.timing import PATCH, patchy

SHAPES = ((16, 117, 157), (64, 56, 56))
INPUTS = ("mixed", "one-signed", "90% positive", "smooth", "one-signed again")


def op_model(op: str, c: int, h: int, w: int) -> ModelProto:
    """A one-node model of `op` on a 1 x c x h x w float input (PRelu with a per-channel slope)."""
    inits, extra, attrs = [], [], {}
    if op == "PRelu":
        inits, extra = [numpy_helper.from_array(np.full((1, c, 1, 1), 0.25, np.float32), "slope")], ["slope"]
    elif op == "Clip":
        inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0.0), ("hi", 6.0))]
        extra = ["lo", "hi"]
    elif op == "LeakyRelu":
        attrs = {"alpha": 0.25}
    node = helper.make_node(op, ["x", *extra], ["y"], **attrs)
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def inputs(c: int, h: int, w: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The inputs of `INPUTS`, one shape."""
    x = np.random.default_rng(seed).standard_normal((1, c, h, w)).astype(np.float32)
    one = np.abs(x)
    return {"mixed": x, "one-signed": one, "90% positive": x + np.float32(1.3), "smooth": patchy(x),
            "one-signed again": one.copy()}


def main() -> int:
    """Times every op on every input, side by side; writes data_dependence.{json,md}."""
    ap = parser(__doc__, "2 ops, one shape, 3 rounds")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of side-by-side timing (default 9)")
    args = ap.parse_args()
    ops = ("PRelu", "LeakyRelu") if args.quick else ("PRelu", "LeakyRelu", "Relu", "Clip", "Sigmoid", "HardSwish",
                                                       "Elu")
    shapes = SHAPES[:1] if args.quick else SHAPES
    rounds = args.rounds or (3 if args.quick else 9)
    rows: list[dict[str, Any]] = []
    print(f"{'op':<10}{'shape':>14}{'mixed us':>10}{'one-signed us':>15}  mixed / one-signed: median [IQR]"
          f"   noise floor (one-signed twice)")
    for op in ops:
        for c, h, w in shapes:
            sess, xs = session(op_model(op, c, h, w)), inputs(c, h, w)
            calls = [functools.partial(sess.run, None, {"x": xs[k]}) for k in INPUTS]
            t = time_rounds({"run": Phase(calls, repeats=10)}, rounds)["run"]
            times = dict(zip(INPUTS, t, strict=True))
            slow, skew, smooth, floor = (ratio(times[k], times["one-signed"])
                                         for k in ("mixed", "90% positive", "smooth", "one-signed again"))
            row = {"op": op, "shape": [1, c, h, w], "rounds": rounds,
                   **{f"{k}_s": float(np.median(v)) for k, v in times.items()},
                   **slow.to_json("mixed_over_one_signed"), **skew.to_json("skewed_over_one_signed"),
                   **smooth.to_json("smooth_over_one_signed"),
                   **floor.to_json("noise_floor")}
            rows.append(row)
            print(f"{op:<10}{f'{c}x{h}x{w}':>14}{row['mixed_s'] * 1e6:>10.1f}{row['one-signed_s'] * 1e6:>15.1f}  "
                  f"{slow.round_median:5.2f}x [{slow.round_iqr[0]:.2f}-{slow.round_iqr[1]:.2f}]"
                  f"{'':>18}{floor.round_median:.2f}x [{floor.round_iqr[0]:.2f}-{floor.round_iqr[1]:.2f}]")
    doc = {"benchmark": "data_dependence", "quick": args.quick, "machine": environment(threads=1), "rows": rows}
    write_json(args.out, "data_dependence", doc)
    write_markdown(args.out, "data_dependence", markdown(doc))
    return 0


def markdown(doc: dict[str, Any]) -> str:
    """The rows as a Markdown table."""
    m = doc["machine"]
    lines = ["# Data-dependent kernel time: onnxruntime CPU, one thread, fp32", "",
             f"{m['date']}, {m['cpu']}, onnxruntime {m['onnxruntime']}, {doc['rows'][0]['rounds']} rounds. "
             "Each op on four inputs of one shape, timed side by side: signs mixed (standard normal, what "
             "measurement feeds, and calibration to every op but PRelu), one-signed (its absolute value), "
             "90% positive, smooth (signs half and half in patches, as in a feature map: the mixed input "
             f"box-filtered {PATCH}x{PATCH} and standardized: what calibration feeds a PRelu). Ratios are "
             "per-round medians over the one-signed time: median [interquartile range]; the noise floor is "
             "the one-signed input timed twice.", "",
             "| op | shape | mixed (us) | one-signed (us) | mixed / one-signed | 90% positive / one-signed | "
             "smooth / one-signed | noise floor |", "|---|---|---:|---:|---:|---:|---:|---:|"]

    def r(row: dict[str, Any], key: str) -> str:
        lo, hi = row[f"{key}_round_iqr"]
        return f"{row[f'{key}_round_median']:.2f}x [{lo:.2f}-{hi:.2f}]"

    for row in doc["rows"]:
        shape = "x".join(str(d) for d in row["shape"][1:])
        lines.append(f"| {row['op']} | {shape} | {row['mixed_s'] * 1e6:.1f} | {row['one-signed_s'] * 1e6:.1f} | "
                     f"{r(row, 'mixed_over_one_signed')} | {r(row, 'skewed_over_one_signed')} | "
                     f"{r(row, 'smooth_over_one_signed')} | {r(row, 'noise_floor')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
