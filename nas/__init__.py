"""nas: hardware-aware neural architecture search under a latency budget."""

from __future__ import annotations

import platform
from importlib import metadata

try:
    __version__ = metadata.version("nas")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "unknown"


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape a result (written into every result file)."""
    versions = {"python": platform.python_version()}
    for name in ("nas", "torch", "numpy", "onnx", "onnxruntime", "optuna"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
