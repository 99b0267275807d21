from .losses import EagleLossOutput, add_feature_noise, eagle_loss, shift_for_draft

__all__ = ["EagleLossOutput", "add_feature_noise", "eagle_loss", "shift_for_draft"]
