"""Which accelerator MLX will use, how much memory it has, and a fast BLAS on Linux CPUs.

On Linux, ``mlx[cpu]`` ships a reference BLAS that runs matmuls about 30x slower than
OpenBLAS. Loading an optimised BLAS with RTLD_GLOBAL before mlx is imported makes MLX bind
to it (measured 22x on LoRA training), so every process that trains calls
``preload_fast_blas()`` first. On macOS MLX uses Accelerate and Metal and nothing is done.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from . import __version__
from .paths import CortexHome

# Searched in order after $CORTEX_BLAS. Debian's pthread OpenBLAS first: it is what
# the README's setup installs.
_BLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/opt/OpenBLAS/lib/libopenblas.so",
    "/opt/intel/oneapi/mkl/latest/lib/intel64/libmkl_rt.so",
)
NO_BLAS_WARNING = (
    "No optimised BLAS found: MLX on this Linux CPU will use its slow reference BLAS "
    "(about 20x slower training). Install OpenBLAS (Debian/Ubuntu: "
    "`apt-get install libopenblas0-pthread`) or point CORTEX_BLAS at a BLAS shared library."
)


@dataclass(frozen=True)
class BlasLibrary:
    """A BLAS shared library loaded into this process."""

    name: str
    path: str


_loaded_blas: BlasLibrary | None = None


def _blas_name(path: str) -> str:
    lowered = path.lower()
    if "openblas" in lowered:
        return "OpenBLAS"
    if "mkl" in lowered:
        return "Intel MKL"
    if "blis" in lowered:
        return "BLIS"
    return Path(path).name


def find_fast_blas() -> str | None:
    """Return the path of the first fast BLAS found ($CORTEX_BLAS, then known locations)."""
    configured = os.environ.get("CORTEX_BLAS")
    if configured:
        return configured if Path(configured).exists() else None
    for candidate in _BLAS_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    matches = sorted(glob.glob("/usr/lib/*-linux-gnu/openblas*/libblas.so.3"))
    return matches[0] if matches else None


def needs_fast_blas() -> bool:
    """Return True where MLX would otherwise use its reference BLAS (Linux)."""
    return sys.platform.startswith("linux")


def preload_fast_blas() -> BlasLibrary | None:
    """Load a fast BLAS globally so that MLX, imported afterwards, uses it.

    Must run before the first ``import mlx``; returns the library loaded, or None.
    """
    global _loaded_blas
    if _loaded_blas is not None or not needs_fast_blas():
        return _loaded_blas
    path = find_fast_blas()
    if path is None:
        return None
    try:
        ctypes.CDLL(path, mode=os.RTLD_GLOBAL | os.RTLD_NOW)
    except OSError:
        return None
    _loaded_blas = BlasLibrary(name=_blas_name(path), path=path)
    return _loaded_blas


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _total_memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def _available_memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def detect_backend() -> str:
    """Return "metal", "cuda" or "cpu" without importing mlx (cheap enough for initialize)."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "metal"
    if (
        _package_version("mlx-cuda")
        or _package_version("mlx-cuda-12")
        or _package_version("mlx-cuda-13")
    ):
        return "cuda"
    return "cpu"


def usable_memory_bytes(backend: str | None = None) -> int:
    """Return the memory training may use: the GPU working set on Metal, else free RAM."""
    backend = backend or detect_backend()
    if backend == "metal":
        try:
            import mlx.core as mx

            info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
            limit = info.get("max_recommended_working_set_size")
            if limit:
                return int(limit)
        except Exception:  # noqa: BLE001 - fall back to system memory
            pass
    return _available_memory_bytes()


def memory_source(backend: str | None = None) -> str:
    """Return what ``usable_memory_bytes`` measures on ``backend``, for explanations."""
    if (backend or detect_backend()) == "metal":
        return "unified memory: Metal's recommended working set, the wired limit mlx_lm sets"
    return "system memory available now"


def _device_name(backend: str) -> str:
    if backend == "metal":
        return f"Apple {platform.machine()} GPU (Metal)"
    if backend == "cuda":
        return "NVIDIA GPU (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores, CPU)"


def system_info(home: CortexHome | None = None) -> dict:
    """Return the ``cortex/systemInfo`` result: backend, device, memory, BLAS, versions."""
    backend = detect_backend()
    blas = None
    warnings: list[str] = []
    if needs_fast_blas():
        path = _loaded_blas.path if _loaded_blas else find_fast_blas()
        if path:
            blas = {"name": _blas_name(path), "path": path}
        else:
            warnings.append(NO_BLAS_WARNING)
    elif sys.platform == "darwin":
        blas = {"name": "Accelerate", "path": "/System/Library/Frameworks/Accelerate.framework"}
    return {
        "backend": backend,
        "device": _device_name(backend),
        "memory": {
            "totalBytes": _total_memory_bytes(),
            "availableBytes": usable_memory_bytes(backend),
        },
        "blas": blas,
        "versions": {
            "cortexRpc": __version__,
            "mlx": _package_version("mlx"),
            "mlxLm": _package_version("mlx-lm"),
            "python": platform.python_version(),
        },
        "cortexHome": str((home or CortexHome.default()).root),
        "warnings": warnings,
    }
