"""Configs of the collision predictor's training (torch-free, for the command line)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CollisionTrainConfig:
    """One training run of the collision predictor."""

    queries: int = 800_000
    """Labelled training queries (16 poses per scene)."""
    val_queries: int = 100_000
    """Validation queries on other scenes, for the operating thresholds."""
    steps: int = 8000
    """Optimizer steps."""
    batch: int = 4096
    """Queries per step."""
    lr: float = 3e-3
    """Adam learning rate (cosine decay to 5% of it)."""
    hidden: int = 64
    """Width of each head's correcting MLP."""
    pair_margin_cm: float = 2.0
    """Self pairs kept: those closer than this somewhere in the training poses."""
    target_recall: float = 0.996
    """Recall each head's threshold keeps on the validation set."""
    seed: int = 0
    """Seed of the scenes, the poses and the initial weights."""
    device: str = "auto"
    """auto, cpu or cuda."""
    out: str = "runs/collision/collision.pt"
    """Checkpoint path."""
    progress: bool = True
    """Show a progress bar."""
