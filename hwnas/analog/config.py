"""aihwkit settings of one analog layer from the target file: the PCM noise model with drift and
global drift compensation ([analog.simulation]), DAC and ADC resolution (dac_bits, adc_bits,
or the layer's own activation bits), input and output ranges, and the tile size through
aihwkit's MappingParameter, so aihwkit splits a layer over tiles as `map-analog` did."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwnas.backends.target import Analog

if TYPE_CHECKING:
    from aihwkit.simulator.configs import InferenceRPUConfig


def resolution(bits: int) -> float:
    """aihwkit's resolution of a `bits`-bit DAC or ADC (its presets' 1 / (2^bits - 2): 8 bits -> 1/254)."""
    return 1.0 / (2**bits - 2) if bits > 1 else 1.0


def rpu_config(hw: Analog, *, input_bits: int | None = None, tile_rows: int | None = None,
               tile_cols: int | None = None, compensation: bool | None = None) -> InferenceRPUConfig:
    """The InferenceRPUConfig of one layer on `hw`'s tiles: inputs at `input_bits` (default: the
    DAC's), outputs at the ADC's bits, tiles of `tile_rows` x `tile_cols` (default: the chip's);
    `compensation` overrides the file's drift_compensation. Bias and per-column scales are
    digital, as the chip's periphery applies them."""
    from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
    from aihwkit.simulator.configs import InferenceRPUConfig
    from aihwkit.simulator.parameters import MappingParameter
    from aihwkit.simulator.parameters.enums import WeightNoiseType

    sim = hw.simulation
    cfg = InferenceRPUConfig()
    cfg.mapping = MappingParameter(max_input_size=tile_rows or hw.tile_rows, max_output_size=tile_cols or hw.tile_cols,
                                   digital_bias=True, weight_scaling_omega=1.0, weight_scaling_columnwise=True)
    cfg.forward.inp_res = resolution(min(input_bits or hw.dac_bits, hw.dac_bits))
    cfg.forward.out_res = resolution(hw.adc_bits)
    cfg.forward.inp_bound = sim.input_bound
    cfg.forward.out_bound = sim.output_bound
    cfg.forward.out_noise = sim.output_noise
    if sim.noise_model == "pcm":
        cfg.noise_model = PCMLikeNoiseModel(g_max=sim.g_max_us, prog_noise_scale=sim.prog_noise_scale,
                                            read_noise_scale=sim.read_noise_scale, drift_scale=sim.drift_scale)
    else:  # ideal devices: no programming or read noise, no drift
        cfg.noise_model = PCMLikeNoiseModel(g_max=sim.g_max_us, prog_noise_scale=0.0, read_noise_scale=0.0,
                                            drift_scale=0.0)
    cfg.forward.w_noise_type = WeightNoiseType.NONE
    compensate = sim.drift_compensation if compensation is None else compensation
    cfg.drift_compensation = GlobalDriftCompensation() if compensate else None
    return cfg
