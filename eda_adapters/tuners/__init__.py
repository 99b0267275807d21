from .eda import EdaConfig, EdaLayer, EdaModel, draft_fingerprint, load_official_eda_checkpoint, router_aux_loss

__all__ = ["EdaConfig", "EdaLayer", "EdaModel", "draft_fingerprint", "load_official_eda_checkpoint", "router_aux_loss"]
