"""Compile a decoder's Triton kernels for a CUDA GPU on a machine without one: every launch of a chunk,
with the registers, spills and shared memory the target's compiler gave it.

The robot's GPU (a Jetson Thor: sm_110, 20 multiprocessors) is rarely the machine that exports the bundle,
and the CPU tests run the kernels under Triton's interpreter, which accepts code the GPU compiler rejects
and says nothing about resources. Inside ``dry_target`` a stand-in Triton driver lets the GPU runtime's own
code (``GraphedDecoder`` over the fused model, eager) run on CPU tensors: each launch is specialized as on
the device (argument dtypes and alignment, block sizes for the target's multiprocessor count), compiled by
Triton's CUDA backend and assembled by ptxas for the target, then recorded instead of run. Outputs stay
uninitialized: this checks compilation and resources, not numbers (the interpreter tests do that).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

from ...errors import EmbodyHubError

# compute capability -> (GPU, multiprocessors); Thor's count is what its CUDA driver reports
TARGETS = {
    80: ("A100", 108), 87: ("Jetson AGX Orin", 16), 90: ("H100/H200", 132), 100: ("B200", 148), 110: ("Jetson Thor", 20),
}
REGISTERS_PER_SM = 65536  # 32-bit registers per multiprocessor on all of them


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel configuration as compiled for the target."""

    kernel: str
    grid: tuple[int, int, int]
    num_warps: int
    num_stages: int
    registers: int  # per thread
    stack: int  # bytes of stack frame per thread: register spills (the kernels have no local arrays)
    shared: int  # bytes per program
    constants: str  # the compile-time arguments (block sizes, flags, arguments specialized to 1)

    @property
    def programs_per_sm(self) -> int:
        """Programs one multiprocessor can hold at once as far as its register file allows (warp slots and
        shared memory may allow fewer)."""
        per_warp = -(-self.registers * 32 // 256) * 256  # registers are allocated per warp in units of 256
        return REGISTERS_PER_SM // (per_warp * self.num_warps)


def launch_rows(launches: Counter[Launch]) -> list[dict[str, Any]]:
    """JSON-ready rows: each launch's fields, how often it ran and its programs per multiprocessor."""
    return [{**dataclasses.asdict(launch), "count": n, "programs_per_sm": launch.programs_per_sm} for launch, n in launches.items()]


def arch_number(arch: str | int) -> int:
    """``110`` from ``110``, ``"110"``, ``"sm_110"`` or ``"thor"``."""
    text = str(arch).lower().removeprefix("sm_")
    if text == "thor":
        return 110
    if not text.isdigit():
        raise EmbodyHubError(f"a CUDA target is a compute capability such as 90, sm_110 or thor, got {arch!r}")
    return int(text)


def target_gpu(arch: int, multiprocessors: int | None = None) -> tuple[str, int]:
    """``(GPU name, multiprocessors)`` a compile for ``arch`` plans for: the listed GPU's count unless given
    (132, an H100's, for an unlisted target)."""
    gpu, sms = TARGETS.get(arch, ("unlisted GPU", 132))
    return gpu, multiprocessors or sms


def cubin_resources(cubin: bytes) -> tuple[int, int]:
    """``(registers per thread, stack bytes per thread)`` of a compiled kernel, read by cuobjdump."""
    import triton

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([triton.knobs.nvidia.cuobjdump.path, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True).stdout
    registers, stack = re.search(r"REG:(\d+)", usage), re.search(r"STACK:(\d+)", usage)
    if registers is None or stack is None:
        raise EmbodyHubError(f"cuobjdump printed no resource usage: {usage[-500:]}")
    return int(registers.group(1)), int(stack.group(1))


_OPCODE = re.compile(r"^\S+\t(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")  # a SASS line: control bits, predicate, opcode


def executed_opcodes(cubin: bytes, passes: int) -> Counter[str]:
    """The SASS opcodes one thread of a compiled GEMV executes when it makes ``passes`` passes over its rows:
    every instruction of the kernel, with the body of its loop over row tiles (the widest backward branch;
    the first tile is peeled before it) counted once per pass after the first. From ``cuobjdump -sass``."""
    from triton.tools.disasm import get_sass

    lines = get_sass(cubin).splitlines()
    loop = (0, -1)  # no loop: an empty body
    for i, line in enumerate(lines):
        target = re.search(r"\bBRA (\w+);", line)
        if target and f"{target.group(1)}:" in lines:
            start = lines.index(f"{target.group(1)}:")
            if start < i - 1 and i - start > loop[1] - loop[0]:  # not the branch to itself that ends every kernel
                loop = (start, i)
    opcodes = Counter(m.group(1) for line in lines if (m := _OPCODE.match(line)))
    for op, n in Counter(m.group(1) for line in lines[loop[0] : loop[1] + 1] if (m := _OPCODE.match(line))).items():
        opcodes[op] += (passes - 2) * n
    return opcodes


def cuda_tools_available() -> bool:
    """Whether this Triton build carries its CUDA backend's tools (ptxas, cuobjdump ship in the Linux wheels)."""
    import triton

    try:
        return os.path.exists(triton.knobs.nvidia.cuobjdump.path)
    except Exception:  # noqa: BLE001  (a Triton without the CUDA backend has no such knob)
        return False


class _StandInDriver:
    """The part of Triton's driver interface a launch uses: target and device queries, ``load_binary`` (which
    here reads the kernel's resources instead of loading it) and a launcher that records."""

    def __init__(self, target: Any, multiprocessors: int, launches: Counter[Launch]) -> None:
        self.target, self.multiprocessors, self.launches = target, multiprocessors, launches
        self.utils = self

    def get_current_target(self) -> Any:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int) -> int:
        return 0

    def get_device_properties(self, device: int) -> dict[str, int]:
        return {"max_shared_mem": 232448, "multiprocessor_count": self.multiprocessors}  # 227 KB per program

    def load_binary(self, name: str, cubin: bytes, shared: int, device: int) -> tuple[None, tuple[int, int], int, int, int]:
        registers, stack = cubin_resources(cubin)
        return None, (registers, stack), registers, stack, 1024

    def launcher_cls(self, src: Any, metadata: Any) -> Any:
        names = src.fn.arg_names
        constants = " ".join(f"{names[path[0]]}={value}" for path, value in sorted(src.constants.items()) if len(path) == 1)

        def launch(gx: int, gy: int, gz: int, stream: int, resources: tuple[int, int], *rest: Any) -> None:
            self.launches[Launch(src.fn.__name__, (gx, gy, gz), metadata.num_warps, metadata.num_stages, *resources, metadata.shared, constants)] += 1

        return launch


@contextlib.contextmanager
def dry_target(arch: int, multiprocessors: int | None = None) -> Iterator[Counter[Launch]]:
    """Within the block, embodyhub's kernels (on any tensors) compile for CUDA compute capability ``arch``
    and record their launches into the yielded counter instead of running. Triton's driver, the kernel
    selection and the kernels' in-memory caches are restored on exit, so a real launch later in the same
    process compiles again."""
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver

    from . import triton_module

    tk = triton_module()
    if tk is None:
        raise EmbodyHubError("triton is not importable here: nothing to compile")
    if type(tk._int8_gemv_kernel).__name__ == "InterpretedFunction":
        raise EmbodyHubError("the kernels were built for Triton's interpreter (TRITON_INTERPRET=1): compile them in a process without it")
    if not cuda_tools_available():
        raise EmbodyHubError("this Triton build has no CUDA compiler tools (ptxas, cuobjdump): install the triton wheel for Linux x86-64 or aarch64")
    sms = target_gpu(arch, multiprocessors)[1]
    launches: Counter[Launch] = Counter()
    # ``driver._active``, not ``driver.active``: reading the property would create the default driver, which
    # fails on a machine without a GPU; restoring None lets Triton create it lazily again.
    saved = driver._active, dict(tk.HOST_GPU), os.environ.get("EMBODYHUB_KERNELS")
    driver.set_active(_StandInDriver(GPUTarget("cuda", arch, 32), sms, launches))
    tk.HOST_GPU.update(multiprocessors=sms, capability=arch // 10)
    os.environ["EMBODYHUB_KERNELS"] = "triton"
    try:
        yield launches
    finally:
        driver._active = saved[0]
        tk.HOST_GPU.update(saved[1])
        if saved[2] is None:
            os.environ.pop("EMBODYHUB_KERNELS")
        else:
            os.environ["EMBODYHUB_KERNELS"] = saved[2]
        for kernel in vars(tk).values():
            if hasattr(kernel, "device_caches"):
                kernel.device_caches.clear()


def compiled_variants(kernel: Any) -> list[Any]:
    """The compiled variants a Triton ``@jit`` kernel holds in memory (one per specialization launched since
    its cache was last cleared), each with its ``asm`` (``ptx``, ``cubin``): read them inside ``dry_target``,
    which clears these caches on exit."""
    return [compiled for cache in kernel.device_caches.values() for compiled in cache[0].values()]


def compile_decoder(model: Any, processor: Any, robot: str, arch: int, batch: int = 1, multiprocessors: int | None = None) -> dict[str, Any]:
    """One chunk of ``GraphedDecoder`` (eager; fused layers reading the quantized weights, as on a GPU) with
    every launch compiled for ``arch``: ``{"gpu", "multiprocessors", "prefill": Counter, "decode": Counter, "steps"}``."""
    from ..onnx import example_inputs
    from ..runtime import GraphedDecoder

    with dry_target(arch, multiprocessors) as launches:
        decoder = GraphedDecoder(model, processor, robot, graph=False, dequantize=False)  # as on CUDA: the kernels read the codes
        q, goal = example_inputs(decoder.embodiment, batch)
        decoder.load(q, goal)
        launches.clear()
        decoder.prefill()
        prefill = Counter(launches)
        launches.clear()
        decoder.decode()
        gpu, sms = target_gpu(arch, multiprocessors)
        return {"gpu": gpu, "multiprocessors": sms, "prefill": prefill, "decode": Counter(launches), "steps": decoder.length - 1}
