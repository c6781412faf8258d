from .generate import generate, stream
from .sampling import filter_top_k, filter_top_p, sample_next

__all__ = ["filter_top_k", "filter_top_p", "generate", "sample_next", "stream"]
