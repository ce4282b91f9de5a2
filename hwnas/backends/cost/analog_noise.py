"""How much noise a graph's analog layers put on its output: a cheap, weight-free estimate of a
network's robustness on crossbar tiles (no training, no aihwkit simulation), for a search to
rank candidates with.

One analog matrix-vector multiply sums R rows into each column (R = Cin/groups · kh · kw), split
over k row tiles whose partial sums the digital core adds. Its output error, relative to the
column's signal, comes from three places, each priced from the target's [analog] and
[analog.simulation] sections and the PCM device statistics aihwkit's `PCMLikeNoiseModel` uses
(Nandakumar et al. 2019, aihwkit's defaults), read `t_s` seconds after programming:

- device errors on every weight: programming noise (additive, about 1 µS of 25) and weight
  quantization where the layer's weights are quantized; the spread of PCM drift exponents left
  after global drift compensation and 1/f read noise (both proportional to the conductance);
  without compensation, also the mean drift's loss of gain;
- DAC quantization of every input (`dac_bits`, or the layer's activation bits);
- ADC output noise and quantization (`output_noise`, `adc_bits` over `output_bound`), once per
  row tile.

Device and DAC errors add up incoherently over the R rows (variance ∝ R) while a trained
layer's signal adds up coherently (∝ R²): their share falls as 1/R. The ADCs' error is paid
once per row tile, so its share falls as k/R². Weights and inputs enter only through their
typical size relative to the largest entry of a column or input vector (the scale aihwkit maps
to g_max and to the DAC's range): for R Gaussian entries about 1/sqrt(2 ln R). A layer with few
rows (a 1x1 convolution on few channels, a depthwise convolution's 9) is noisy; a 3x3
convolution on many channels is quiet.

Errors then travel with the signal through the graph: a weight layer re-normalizes its output
(trained networks' BatchNorm) and adds its own error to its input's; an Add mixes its inputs'
signals and errors (a skip connection brings in a clean copy and dilutes the error; a branch
multiplied by a constant zero carries neither); pooling, activations and reshapes keep the
ratio, since a weight error is as correlated across pixels as the signal it rides on. The
result, `NoiseReport.ratio`, is the output's error-to-signal power ratio (0: all digital).
Layers a `Placement` puts on the digital core add nothing; a layer without a placement counts as
analog when it has a crossbar matrix, as the analog cost model prices it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hwnas.backends.cost.analog import weight_matrix
from hwnas.backends.target import Analog, Target, load_target
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import const_value, static_values

# aihwkit's PCMLikeNoiseModel (its defaults, fitted to IBM's PCM devices by Nandakumar et al. 2019).
PROG_COEFF = (0.26348, 1.9650, -1.1731)
"""Programming noise std, µS at g_max = 25 µS, as a polynomial in g / g_max."""
PROG_G_MAX_US = 25.0
T0_S = 20.0
"""Time of the first read, from which drift counts."""
T_READ_S = 250e-9
"""Read duration of the 1/f read-noise fit."""
LAYER_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class State:
    """A tensor's signal power (in units of a normalized layer output) and its error-to-signal ratio."""

    signal: float = 1.0
    ratio: float = 0.0


CLEAN = State()
ZERO = State(0.0, 0.0)


@dataclass
class NoiseReport:
    """A graph's output error-to-signal ratio and the error each analog layer adds (its share of
    its own output)."""

    ratio: float
    t_s: float
    layers: dict[str, float] = field(default_factory=dict)

    @property
    def db(self) -> float:
        """The ratio in decibels (-inf when no layer is analog)."""
        return 10.0 * math.log10(self.ratio) if self.ratio > 0 else -math.inf


def typical_ratio(n: int) -> float:
    """The rms of n Gaussian entries over their largest magnitude, about 1/sqrt(2 ln n) (1 for n <= 2)."""
    return min(1.0, 1.0 / math.sqrt(2.0 * math.log(n))) if n > 2 else 1.0


def _uniform_error(bits: int, full_scale: float) -> float:
    """Std of the rounding error of a symmetric `bits`-bit grid over [-full_scale, full_scale]."""
    return 2.0 * full_scale / (2**bits - 2) / math.sqrt(12.0) if bits > 1 else full_scale


def mvm_noise(rows: int, row_tiles: int, hw: Analog, t_s: float, *, w_bits: int | None = None,
              a_bits: int | None = None) -> float:
    """Error-to-signal power ratio one analog MVM adds: `rows` summed per column over `row_tiles`
    tiles of `hw`, read `t_s` seconds after programming (see the module doc)."""
    sim = hw.simulation
    w = x = typical_ratio(rows)  # typical weight / column max, input / vector max
    if sim.noise_model == "pcm":
        g = w  # a typical weight's conductance over g_max
        prog = sum(c * g**i for i, c in enumerate(PROG_COEFF)) / PROG_G_MAX_US * sim.prog_noise_scale
        t = t_s + T0_S
        nu_std = min(max(-0.0125 * math.log(g) - 0.0059, 0.008), 0.045) * sim.drift_scale
        drift = nu_std * math.log(t / T0_S)
        q_s = min(0.0088 / g**0.65, 0.2)
        read = q_s * math.sqrt(math.log((t + T_READ_S) / (2 * T_READ_S))) * sim.read_noise_scale
        # Without global drift compensation the mean drift shrinks every weight alike: a gain error
        # as coherent as the signal itself, so it does not fall with the rows.
        nu_mean = min(max(-0.0155 * math.log(g) + 0.0244, 0.049), 0.1) * sim.drift_scale
        gain = 0.0 if sim.drift_compensation else (1.0 - (t / T0_S) ** -nu_mean) ** 2
    else:
        prog = drift = read = gain = 0.0
    additive = prog**2 + (_uniform_error(w_bits, 1.0) ** 2 if w_bits else 0.0)
    relative = drift**2 + read**2
    dac = _uniform_error(min(a_bits or hw.dac_bits, hw.dac_bits), sim.input_bound)
    adc = sim.output_noise**2 + _uniform_error(hw.adc_bits, sim.output_bound) ** 2
    error = rows * x**2 * (additive + relative * w**2) + rows * w**2 * dac**2 + row_tiles * adc
    return error / (rows * w * x) ** 2 + gain


def layer_noise(node: Node, hw: Analog, t_s: float) -> float | None:
    """The error an analog weight layer adds (None when it has no crossbar matrix or is placed digital)."""
    p = node.ann.placement
    if p is not None and not p.analog:
        return None
    m = weight_matrix(node)
    if isinstance(m, str):
        return None
    rows = m[0]
    row_tiles = math.ceil(rows / ((p.tile_rows if p is not None else None) or hw.tile_rows))
    q = node.ann.quant
    return mvm_noise(rows, row_tiles, hw, t_s, w_bits=q.w_bits if q is not None else None,
                     a_bits=q.a_bits if q is not None else None)


def _add(states: list[State]) -> State:
    """A sum of independent terms: signal powers add, and so do the errors."""
    signal = sum(s.signal for s in states)
    return State(signal, sum(s.signal * s.ratio for s in states) / signal) if signal > 0 else ZERO


def _concat(states: list[State], sizes: list[float]) -> State:
    """Tensors side by side: the elements' mean signal power, and their pooled error."""
    signal = sum(n * s.signal for n, s in zip(sizes, states, strict=True))
    if signal <= 0:
        return ZERO
    error = sum(n * s.signal * s.ratio for n, s in zip(sizes, states, strict=True))
    return State(signal / sum(sizes), error / signal)


def propagate(graph: Graph, hw: Analog, t_s: float, inputs: State = CLEAN,
              layers: dict[str, float] | None = None) -> State:
    """The state of the graph's first output when its inputs arrive in state `inputs`; the error
    each analog layer adds goes into `layers` when given."""
    static = static_values(graph)
    states: dict[int, State] = {id(v): inputs for v in graph.inputs}

    def state(v: Value | None) -> State | None:
        if v is None or static(v):
            return None
        return states.get(id(v), CLEAN)

    for n in graph.nodes:
        ins = [s for s in map(state, n.inputs) if s is not None]
        if not ins:
            continue  # computed from constants: no analog error, no signal
        if n.op in LAYER_OPS and len(ins) == 1:
            added = layer_noise(n, hw, t_s)
            if added is not None and layers is not None:
                layers[n.name] = added
            out = State(1.0, ins[0].ratio + (added or 0.0)) if ins[0].signal > 0 else ZERO
        elif n.op in ("Add", "Sum", "Sub"):
            out = _add(ins)
        elif n.op == "Concat":
            sizes = [_channels(v, n) for v in n.inputs if state(v) is not None]
            out = _concat(ins, sizes)
        elif n.op == "Mul" and len(ins) == 1 and _zero_factor(n):
            out = ZERO  # x * 0: NAS-Bench-201's `none` edge
        elif len(ins) > 1:  # products of two activations (attention, gating): relative errors add
            out = State(ins[0].signal, sum(s.ratio for s in ins)) if ins[0].signal > 0 else ZERO
        else:
            out = ins[0]
        for o in n.outputs:
            states[id(o)] = out
    first = graph.outputs[0]
    return state(first) or ZERO


def _zero_factor(node: Node) -> bool:
    return any((c := const_value(v)) is not None and c.size > 0 and not c.any() for v in node.inputs)


def _channels(v: Value | None, node: Node) -> float:
    shape = v.type.static_shape if v is not None and v.type is not None else None
    axis = node.attr_int("axis", 1)
    return float(shape[axis]) if shape is not None and -len(shape) <= axis < len(shape) else 1.0


def analog_noise(graph: Graph, target: Target | str = "analog-pcm", t_s: float = 86400.0) -> NoiseReport:
    """The graph's output error-to-signal ratio on `target`'s tiles `t_s` seconds after
    programming, and each analog layer's own share (see the module doc). Pure: reads placements."""
    tgt = target if isinstance(target, Target) else load_target(target)
    layers: dict[str, float] = {}
    out = propagate(graph, tgt.section(Analog), t_s, layers=layers)
    return NoiseReport(out.ratio, t_s, layers)
