"""The environment a dataset was built or a detector was evaluated in."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("afpbench", "torch", "diffusers", "transformers", "datasets", "accelerate", "huggingface_hub", "torchattacks", "peft", "pyarrow", "pillow", "numpy")


def version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def environment(full: bool = False) -> dict[str, Any]:
    """Versions of python and the stack; with ``full``, also torch's CUDA/GPU view (imports torch)."""
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    out.update({p: version(p) for p in PACKAGES})
    if full:
        try:
            import torch

            out["cuda"] = torch.version.cuda
            out["cuda available"] = torch.cuda.is_available()
            out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
            out["cpu threads"] = torch.get_num_threads()
        except ImportError:
            out["cuda"] = "torch not installed"
    return out


def git_state(path: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the afpbench checkout, or (None, None) outside a git clone."""
    root = path or Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():  # an installed wheel: not our checkout
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return commit.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process.

    Linux: VmHWM of /proc/self/status. ``ru_maxrss`` is not used there because it keeps
    the high-water mark of the parent's memory across fork + exec, so a small child of a
    big process would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # POSIX only; Windows has neither this nor /proc
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
