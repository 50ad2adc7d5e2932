"""Device and precision: bf16 autocast where the hardware does it well, fp32 elsewhere."""

from __future__ import annotations

import contextlib
import functools

import torch

from .errors import ConfigError


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16, where oneDNN runs bf16 faster than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` → bf16 on CUDA with bf16 support and on AMX/AVX512-BF16 CPUs, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def resolve_channels_last(setting: str, device: torch.device, precision: str) -> bool:
    """`auto` → channels-last with bf16, contiguous (NCHW) in fp32.

    Not on the CPU in fp32, though oneDNN trains faster there in channels-last (measured
    on a 2-core AVX2 CPU: ResNet-18 +11 % at 48 px, +24 % at 112 px): on that CPU the
    channels-last weight gradient of a strided 3x3 convolution of ferbench_resnet_tiny
    differed from a float64 reference by 4.6 %, against 1e-6 in NCHW.
    """
    if setting != "auto":
        return setting == "on"
    return precision == "bf16"


def autocast(device: torch.device, precision: str):
    """The autocast context of a run (a no-op in fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Cores other processes keep busy, from this fraction of a core on, leave this run's threads.
SHARED_CORE = 0.5


def busy_cores(sample_s: float = 0.25) -> float | None:
    """Cores kept busy by the machine's processes over `sample_s` seconds (this one sleeping
    meanwhile), from /proc/stat; None where there is none (not Linux)."""
    import time

    def snapshot():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values[:8]), values[3] + values[4]  # total, idle + iowait

    try:
        total0, idle0 = snapshot()
        time.sleep(sample_s)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    import os

    busy = 1 - (idle1 - idle0) / (total1 - total0)
    return busy * (os.cpu_count() or 1)


def shared_cpu_threads(device: torch.device) -> tuple[int, float] | None:
    """(threads, busy cores) for a CPU run on a machine that other processes keep busy: the
    cores they leave free, at least one; None when the machine is free (torch's default
    then). Measured on 2 cores beside a training neighbour, ResNet-18 at 112 px: 11-38 img/s
    with torch's 2 threads, whose parallel regions wait on a descheduled thread, against
    49-51 img/s with one (benchmarks/bench_neighbour.py)."""
    if device.type != "cpu":
        return None
    busy = busy_cores()
    have = torch.get_num_threads()
    if busy is None or busy < SHARED_CORE:
        return None
    threads = max(1, min(have, round(have - busy)))
    return (threads, busy) if threads < have else None


def describe(device: torch.device) -> dict:
    """The record's `device`: what trained (the GPU, or the CPU by its model name), torch's
    threads, the host's CPU and cores, and on CUDA the GPU's capability, memory and driver."""
    from .provenance import cpu_cores, cpu_model, gpu_facts

    cpu = cpu_model()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {"type": device.type, "name": name, "threads": torch.get_num_threads(),
            "cpu": cpu, "cores": cpu_cores(), **gpu_facts(device)}
