"""ssmkit: state space sequence models (S4D, Mamba, Mamba-2, hybrids with attention) for PyTorch."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["LanguageModel", "ModelConfig", "ModelState", "__version__"]

if TYPE_CHECKING:
    from .models import LanguageModel, ModelConfig, ModelState


def __getattr__(name: str):
    # Imported on first use, so `import ssmkit.ops` stays light and never builds the model registry.
    if name in ("LanguageModel", "ModelConfig", "ModelState"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'ssmkit' has no attribute {name!r}")
