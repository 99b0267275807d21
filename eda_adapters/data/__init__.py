from .features import compute_target_features

__all__ = ["compute_target_features"]
