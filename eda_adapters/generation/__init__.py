"""Speculative decoding with EAGLE/EDA drafts: the `generate(assistant_model=draft)` hook (chain drafting), EAGLE-2
tree decoding, and acceptance statistics."""

from .candidate_generator import EagleCandidateGenerator
from .drafts import as_eagle_draft, prepare_draft
from .hook import install_generate_hook
from .stats import SpeculativeStats, compute_tau, track_acceptance
from .tree import DraftTree, TreeConfig, TreeSpeculator, speculative_generate
from .tree_verification import AcceptedPath, TreeSampler

install_generate_hook()

__all__ = [
    "AcceptedPath",
    "DraftTree",
    "EagleCandidateGenerator",
    "SpeculativeStats",
    "TreeConfig",
    "TreeSampler",
    "TreeSpeculator",
    "as_eagle_draft",
    "compute_tau",
    "install_generate_hook",
    "prepare_draft",
    "speculative_generate",
    "track_acceptance",
]
