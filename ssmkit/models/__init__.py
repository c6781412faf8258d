from .config import PRESETS, ModelConfig
from .lm import LanguageModel, ModelState

__all__ = ["PRESETS", "LanguageModel", "ModelConfig", "ModelState"]
