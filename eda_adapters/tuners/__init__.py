from .eda import EdaConfig, EdaLayer, EdaModel, draft_fingerprint, router_aux_loss

__all__ = ["EdaConfig", "EdaLayer", "EdaModel", "draft_fingerprint", "router_aux_loss"]
