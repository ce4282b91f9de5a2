"""Build and run a generated C project: a host shared library (gcc, called through ctypes)
and a bare-metal program for QEMU's mps2-an500 board (a Cortex-M7) that reads inputs and
writes outputs through semihosting and counts instructions with SysTick under `-icount`.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnas.codegen.c.project import CProject
from hwnas.errors import HwnasError

WARNINGS = ("-std=c99", "-Wall", "-Wextra", "-Werror")
ARM_FLAGS = ("-mcpu=cortex-m7", "-mthumb", "-O2")
NS_PER_TICK = 40
"""SysTick on the processor clock of QEMU's mps2 boards (25 MHz): 40 ns a tick, and with
`-icount shift=0` one instruction is 1 ns of virtual time, so 40 instructions a tick."""


class HarnessError(HwnasError):
    """A tool of the harness is missing or failed (gcc, arm-none-eabi-gcc, QEMU)."""


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise HarnessError(f"'{cmd[0]}' is not installed") from None
    except subprocess.TimeoutExpired:
        raise HarnessError(f"'{cmd[0]}' ran past {timeout:g} s") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise HarnessError(f"{' '.join(cmd[:3])} ... failed ({done.returncode}): {' | '.join(tail)}")
    return done


def build_host_library(project: CProject, folder: Path) -> Path:
    """The project compiled by gcc (-std=c99 -Wall -Wextra -Werror -O2) into a shared library."""
    project.write(folder)
    _run(["gcc", *WARNINGS, "-O2", "-shared", "-fPIC", "-o", "libmodel.so", "model.c", "hwnas_kernels.c", "-lm"],
         folder, 300)
    return folder / "libmodel.so"


class HostModel:
    """A generated model loaded from its shared library."""

    def __init__(self, library: Path, project: CProject) -> None:
        self.lib = ctypes.CDLL(str(library))
        self.lib.model_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.lib.model_run.restype = ctypes.c_int
        self.in_size = int(np.prod(project.input.shape))
        self.out_size = int(np.prod(project.output.shape))

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """int8 outputs, one row per int8 input row."""
        xs = np.ascontiguousarray(np.asarray(inputs, np.int8).reshape(len(inputs), self.in_size))
        out = np.zeros((len(xs), self.out_size), np.int8)
        for i in range(len(xs)):
            self.lib.model_run(xs[i].ctypes.data, out[i].ctypes.data)
        return out


def arm_toolchain_missing() -> str | None:
    """What of the Arm bare-metal toolchain is missing, or None when all is installed."""
    missing = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm") if shutil.which(t) is None]
    return ", ".join(missing) or None


LINKER_SCRIPT = """MEMORY
{
  FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 4M
  RAM (rwx)  : ORIGIN = 0x20000000, LENGTH = 4M
}
ENTRY(Reset_Handler)
SECTIONS
{
  .text : { KEEP(*(.vectors)) *(.text*) *(.rodata*) . = ALIGN(4); } > FLASH
  .ARM.exidx : { *(.ARM.exidx*) } > FLASH
  _sidata = LOADADDR(.data);
  .data : { _sdata = .; *(.data*) . = ALIGN(4); _edata = .; } > RAM AT > FLASH
  .bss (NOLOAD) : { __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(8); __bss_end__ = .; } > RAM
  end = .;
  _estack = ORIGIN(RAM) + LENGTH(RAM);
}
"""

STARTUP = r"""/* Cortex-M7 start-up for QEMU mps2-an500: vector table, reset, SysTick counter. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t _sidata, _sdata, _edata, __bss_start__, __bss_end__, _estack;
extern int main(void);
extern void initialise_monitor_handles(void);
volatile uint32_t hw_systick_wraps;

void Reset_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void);
void _init(void);
void _fini(void);

void Default_Handler(void) { for (;;) {} }
void SysTick_Handler(void) { hw_systick_wraps++; }
void _init(void) {}
void _fini(void) {}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler,
    SysTick_Handler};

void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
    initialise_monitor_handles();
    exit(main());
}
"""

MAIN = r"""/* Runs model_run on every input in inputs.bin, writes outputs.bin, prints SysTick ticks. */
#include <stdint.h>
#include <stdio.h>

#include "model.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

extern volatile uint32_t hw_systick_wraps;
static int8_t input[MODEL_INPUT_SIZE], output[MODEL_OUTPUT_SIZE];

static uint64_t ticks(void) {
    uint32_t wraps, value;
    do {
        wraps = hw_systick_wraps;
        value = SYST_CVR;
    } while (wraps != hw_systick_wraps);
    return ((uint64_t)wraps << 24) + (0xFFFFFFu - value);
}

int main(void) {
    FILE *in = fopen("inputs.bin", "rb"), *out = fopen("outputs.bin", "wb");
    uint64_t first = 0, total = 0;
    unsigned count = 0;
    if (!in || !out) {
        printf("hwnas: cannot open inputs.bin or outputs.bin\n");
        return 1;
    }
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* enable, interrupt on wrap, processor clock */
    while (fread(input, 1, MODEL_INPUT_SIZE, in) == MODEL_INPUT_SIZE) {
        uint64_t t0 = ticks(), t;
        model_run(input, output);
        t = ticks() - t0;
        if (count == 0) first = t;
        total += t;
        count++;
        fwrite(output, 1, MODEL_OUTPUT_SIZE, out);
    }
    fclose(in);
    fclose(out);
    printf("hwnas: runs %u first_ticks %lu total_ticks %lu\n", count, (unsigned long)first, (unsigned long)total);
    return 0;
}
"""


@dataclass(frozen=True)
class ArmBuild:
    """A bare-metal program and the size of what the model puts in flash and RAM."""

    elf: Path
    text: int
    data: int
    bss: int
    model_text: int
    """text + rodata of model.o and hwnas_kernels.o alone (arm-none-eabi-size): the model's flash."""
    model_code: int
    """Of that, the instructions (.text) only: code beyond the weights."""


def build_cortex_m7(project: CProject, folder: Path) -> ArmBuild:
    """The project linked into a program for QEMU's mps2-an500 (arm-none-eabi-gcc
    -mcpu=cortex-m7 -mthumb -O2 with -std=c99 -Wall -Wextra -Werror, newlib's rdimon
    semihosting)."""
    missing = arm_toolchain_missing()
    if missing:
        raise HarnessError(f"the Arm toolchain is incomplete: {missing} missing")
    project.write(folder)
    (folder / "link.ld").write_text(LINKER_SCRIPT)
    (folder / "startup.c").write_text(STARTUP)
    (folder / "main.c").write_text(MAIN)
    cc = ["arm-none-eabi-gcc", *ARM_FLAGS, *WARNINGS]
    for name in ("model", "hwnas_kernels"):
        _run([*cc, "-c", f"{name}.c", "-o", f"{name}.o"], folder, 300)
    _run([*cc, "-nostartfiles", "--specs=rdimon.specs", "-T", "link.ld", "-o", "model.elf", "startup.c", "main.c",
          "model.o", "hwnas_kernels.o", "-lm"], folder, 300)
    total = _size(folder, ["model.elf"])
    objects = _size(folder, ["--format=sysv", "model.o", "hwnas_kernels.o"], sysv=True)
    return ArmBuild(folder / "model.elf", total["text"], total["data"], total["bss"],
                    objects["text"] + objects["rodata"], objects["text"])


def _size(folder: Path, args: list[str], sysv: bool = False) -> dict[str, int]:
    out = _run(["arm-none-eabi-size", *args], folder, 60).stdout
    if not sysv:  # berkeley: text data bss dec hex filename
        text, data, bss = (int(v) for v in out.strip().splitlines()[1].split()[:3])
        return {"text": text, "data": data, "bss": bss}
    sizes = {"text": 0, "rodata": 0}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            for key in sizes:
                if parts[0] == f".{key}" or parts[0].startswith(f".{key}."):
                    sizes[key] += int(parts[1])
    return sizes


@dataclass(frozen=True)
class QemuRun:
    """Outputs of the model on QEMU and the instructions of its first inference."""

    outputs: np.ndarray
    first_instructions: int
    mean_instructions: float


def run_qemu(build: ArmBuild, project: CProject, inputs: np.ndarray, timeout: float = 120) -> QemuRun:
    """Run the program under `qemu-system-arm -M mps2-an500 -nographic -semihosting -icount
    shift=0` on int8 inputs (one row each)."""
    folder = build.elf.parent
    n = len(inputs)
    (folder / "inputs.bin").write_bytes(np.ascontiguousarray(inputs, np.int8).tobytes())
    (folder / "outputs.bin").unlink(missing_ok=True)
    done = _run(["qemu-system-arm", "-M", "mps2-an500", "-nographic", "-semihosting", "-icount", "shift=0",
                 "-kernel", build.elf.name], folder, timeout)
    line = next((s for s in done.stdout.splitlines() if s.startswith("hwnas: runs")), None)
    if line is None:
        raise HarnessError(f"QEMU run printed no result: {done.stdout.strip()[-200:]}")
    parts = line.split()
    runs, first, total = int(parts[2]), int(parts[4]), int(parts[6])
    if runs != n:
        raise HarnessError(f"QEMU ran {runs} inferences of {n}")
    out = np.frombuffer((folder / "outputs.bin").read_bytes(), np.int8).reshape(n, -1)
    return QemuRun(out.copy(), first * NS_PER_TICK, total * NS_PER_TICK / max(n, 1))
