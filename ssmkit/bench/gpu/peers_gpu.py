"""GPU peers, loaded from a folder of their sources (dev-only: the library never imports them elsewhere).

The GPU machine has no network, so the peers travel as files in a git-ignored folder (`--peers-dir`, default
`.peers`). Fetch them on a machine with network, from the repository root:

    MAMBA_SKIP_CUDA_BUILD=TRUE python3 -m pip download --no-deps --no-binary :all: --no-build-isolation \
        mamba-ssm==2.3.2.post1 -d /tmp/peerdl
    tar xzf /tmp/peerdl/mamba_ssm-2.3.2.post1.tar.gz -C /tmp/peerdl
    cp -r /tmp/peerdl/mamba_ssm-2.3.2.post1/mamba_ssm .peers/
    python3 -m pip download --no-deps fla-core -d /tmp/peerdl && unzip -q /tmp/peerdl/fla_core-*.whl 'fla/*' -d .peers

Their own package `__init__`s import everything (mamba_ssm's imports its CUDA extension, which is not built;
fla's imports every layer and model), so the loader never runs them: it registers an empty package module whose
`__path__` is the folder, and Python's import system then finds the submodules asked for (their own
`__init__`s below the top run as usual). No third-party file is edited. A package that is not in the folder is
imported the usual way if it is installed; otherwise each row that needs it says "not available" and why.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from types import ModuleType

# packages whose listed modules are registered empty, so their heavy __init__ never runs
SHIMMED = {"mamba_ssm": ("mamba_ssm",), "fla": ("fla", "fla.ops")}


def _version(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, "__init__.py")) as f:
            found = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", f.read(), re.M)
    except OSError:
        return None
    return found.group(1) if found else None


def _empty_package(name: str, folder: str) -> ModuleType:
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [folder]
    module = importlib.util.module_from_spec(spec)
    module.__path__ = [folder]
    module.__file__ = os.path.join(folder, "__init__.py")
    version = _version(folder)
    if version is not None:
        module.__version__ = version
    return module


class GpuPeers:
    """Finds peer packages in `peers_dir` (shimmed) or installed; `get` returns (object or None, note)."""

    def __init__(self, peers_dir: str | None = ".peers", enabled: bool = True, allow_installed: bool = True):
        self.peers_dir = peers_dir
        self.enabled = enabled
        self.allow_installed = allow_installed
        self._origin: dict[str, str | None] = {}

    def _prepare(self, package: str) -> str | None:
        """Make `package` importable; returns where it comes from, or None with the reason in self._origin."""
        if package in self._origin:
            return self._origin[package]
        origin = None
        folder = os.path.join(self.peers_dir, package) if self.peers_dir else None
        if folder and os.path.isdir(folder):
            existing = sys.modules.get(package)
            if existing is None or folder in list(getattr(existing, "__path__", [])):
                for name in SHIMMED.get(package, (package,)):
                    if name not in sys.modules:
                        sub = os.path.join(self.peers_dir, *name.split("."))
                        sys.modules[name] = _empty_package(name, sub)
                version = getattr(sys.modules[package], "__version__", "?")
                origin = f"{package} {version} from {self.peers_dir}"
            else:
                origin = f"{package} {getattr(existing, '__version__', '?')} (already imported)"
        elif self.allow_installed and importlib.util.find_spec(package) is not None:
            origin = f"{package} (installed)"
        self._origin[package] = origin
        return origin

    def get(self, package: str, module: str, attr: str) -> tuple[object | None, str]:
        if not self.enabled:
            return None, "not available: peers skipped (--no-peers)"
        origin = self._prepare(package)
        if origin is None:
            where = f"no {package}/ folder under {self.peers_dir!r}" if self.peers_dir else "no peers folder given"
            return None, f"not available: {where} and {package} is not installed"
        try:
            obj = getattr(importlib.import_module(module), attr)
        except Exception as exc:  # an unbuilt CUDA extension, a missing dependency, an API change
            detail = " ".join(str(exc).split())[:160]
            hint = ", a CUDA extension that is not built" if "_cuda" in detail else ""
            return None, f"not available: {attr} does not import ({type(exc).__name__}: {detail}{hint})"
        return obj, f"{module}.{attr}, {origin}"
