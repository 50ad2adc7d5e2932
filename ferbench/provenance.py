"""What a result records of where it ran: code commits, plugin versions, CPU, GPU, clock.

One function per fact, each of which answers None (or leaves its key out) where the fact
cannot be had, never an error: a record is written whether or not git, /proc or a GPU
driver is there.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

# Seconds any one outside command may take before its fact is recorded as unknown.
COMMAND_TIMEOUT_S = 5


def utc_now() -> str:
    """The current time, ISO 8601 in UTC to the second (`2025-01-31T12:00:00+00:00`)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's marketing name (`AMD EPYC 7B13`), not the bare architecture that
    platform.processor() gives on Linux: `cpuinfo` there, sysctl on macOS."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        brand = _output(["sysctl", "-n", "machdep.cpu.brand_string"])
        if brand:
            return brand
    return platform.processor() or platform.machine()


def cpu_cores() -> int | None:
    """The logical cores this machine has (not those this process may use)."""
    return os.cpu_count()


def gpu_facts(device) -> dict:
    """A CUDA device's compute capability, memory and the NVIDIA driver; {} elsewhere."""
    if getattr(device, "type", None) != "cuda":
        return {}
    import torch

    props = torch.cuda.get_device_properties(device)
    return {"capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "driver": nvidia_driver()}


def nvidia_driver() -> str | None:
    """The NVIDIA driver version, from nvidia-smi (torch knows only the CUDA API level)."""
    text = _output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return text.splitlines()[0].strip() if text else None


def cuda_versions(device) -> dict:
    """The CUDA and cuDNN versions torch runs with, for a run on CUDA; {} elsewhere."""
    if getattr(device, "type", None) != "cuda":
        return {}
    import torch

    return {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}


def plugin_versions(plugins) -> dict[str, str]:
    """Each installed plugin distribution's version, from the registry's `plugins`
    (built-ins are ferbench's own modules, at ferbench's version)."""
    return {name: info.version for name, info in sorted(plugins.items()) if not info.builtin}


def git_state(folder: str | Path) -> dict | None:
    """{commit, dirty} of the git checkout whose tracked files `folder` holds; None where git
    is missing, no file under `folder` is tracked (an install in a checkout's ignored
    virtual environment is not that checkout's code) or git does not answer in time.
    Untracked files count as dirty: a new module may have been what ran."""
    git = ["git", "-C", str(folder)]
    if _output([*git, "ls-files", "--error-unmatch", "--", "."]) is None:
        return None
    commit = _output([*git, "rev-parse", "HEAD"])
    status = _output([*git, "status", "--porcelain"])
    if not commit or status is None:
        return None
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


def ferbench_code() -> dict | None:
    """The checkout of the ferbench package that is running (see git_state)."""
    from . import __file__ as package_init

    return git_state(Path(package_init).parent)


def distribution_code(name: str) -> dict | None:
    """Where an installed distribution's code came from, by what pip recorded (PEP 610):
    the checkout of an editable install (see git_state), or the commit a VCS URL was
    installed from (`dirty` false: pip installs the commit as it is); None otherwise."""
    try:
        text = metadata.distribution(name).read_text("direct_url.json")
        direct = json.loads(text) if text else {}
    except (metadata.PackageNotFoundError, ValueError):
        return None
    vcs = direct.get("vcs_info") or {}
    if vcs.get("commit_id"):
        return {"commit": vcs["commit_id"], "dirty": False}
    url = urlparse(direct.get("url", ""))
    if (direct.get("dir_info") or {}).get("editable") and url.scheme == "file":
        return git_state(unquote(url.path))
    return None


def code_state(plugins) -> dict[str, dict | None]:
    """ferbench's checkout and each plugin distribution's, by distribution name."""
    return {"ferbench": ferbench_code(),
            **{name: distribution_code(name) for name in plugin_versions(plugins)}}


def _output(command: list[str]) -> str | None:
    """A command's standard output, or None where it is missing, fails or hangs."""
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None
