"""Code generation: a quantized graph as source code for a device.

`generate_c` writes the C99 backend's project (model.c/model.h, int8 kernels, one static
arena laid out over the MCU cost model's execution order); `hwnas.codegen.c.harness`
builds and runs it with gcc, and on an emulated Cortex-M7 under QEMU.
"""

from __future__ import annotations

from hwnas.codegen.c.grids import CodegenError
from hwnas.codegen.c.project import CProject, TensorInfo, check_io, generate_c

__all__ = ["CProject", "CodegenError", "TensorInfo", "check_io", "generate_c"]
