"""What the machine can do fast: bf16 support on the CPU or GPU, and the precision that follows.

`train.precision: auto` and `predict --precision auto` resolve here, once, at start, and say what
they chose: bf16 where the processor has native bf16 arithmetic (AVX-512 BF16 or AMX on x86
CPUs; compute capability 8.0 and later on NVIDIA GPUs), else float32. docs/benchmarks/train.md has the
measurements behind this default (speed, and validation Dice within seed noise of float32).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) below its bf16 kernels.
ONEDNN_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (AVX-512 BF16 or AMX tiles) and torch uses
    them; without them torch emulates bf16 and it runs slower than float32. A process whose
    kernels are held below them (ATEN_CPU_CAPABILITY=avx2 or ONEDNN_MAX_CPU_ISA=AVX2, as a
    benchmark of an AVX2-only machine runs) has none either."""
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ONEDNN_WITHOUT_BF16:  # oneDNN's convolutions held back
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def device_has_bf16(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def training_device(accelerator: str) -> torch.device:
    """The device a Lightning `accelerator` setting trains on (its first one)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_training_precision(precision: str, accelerator: str) -> str:
    """A Lightning precision string for `train.precision`; `auto` becomes bf16-mixed where the
    training device has native bf16, else 32-true, and says so."""
    if precision != "auto":
        return precision
    device = training_device(accelerator)
    chosen = "bf16-mixed" if device_has_bf16(device) else "32-true"
    log.info("precision: %s (auto: %s %s native bf16; --precision 32-true to opt out)", chosen, device.type,
             "has" if chosen == "bf16-mixed" else "has no")
    return chosen


def resolve_inference_precision(precision: str, device: torch.device) -> str:
    """`fp32` or `bf16` for inference; `auto` is bf16 where `device` has native bf16."""
    if precision != "auto":
        return precision
    return "bf16" if device_has_bf16(device) else "fp32"


def describe(device: torch.device | str = "cpu") -> dict[str, str | int]:
    """What ran a job, for its summary and report: package versions, Python, the processor (and
    GPU when `device` is one), torch's thread count."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            processor = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                             processor)
    except OSError:
        pass
    described: dict[str, str | int] = {
        **{name: installed(name) for name in ("segan", "torch", "lightning", "segmentation-models-pytorch", "timm")},
        "python": platform.python_version(), "platform": platform.platform(), "processor": processor,
        "cpu_bf16": cpu_has_bf16(), "torch_threads": torch.get_num_threads()}
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        described["gpu"] = torch.cuda.get_device_name(device)
    return described
