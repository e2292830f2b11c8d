"""Typed configs of the world-model entry points, importable without torch (the CLI builds its
parser from them on every start)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """One world-model training run."""

    data: str = "data/pick_place"
    """Dataset directories, comma-separated (one per task for a multi-task model)."""
    out: str = "runs/world_model"
    """Run directory: checkpoints, TensorBoard logs, metrics."""
    preset: str = "small"
    """Model size: tiny, small or base."""
    priors: str = "none"
    """Structural priors applied in the loss and, by default, when the model imagines: none, all,
    or all less some, e.g. -touch (robotworld.model.priors)."""
    steps: int = 20000
    """Gradient steps in total (a resumed run continues to this count)."""
    batch_size: int = 256
    """Windows per gradient step (split evenly over the datasets)."""
    horizon: int = 10
    """Steps of latent rollout per window (multi-step consistency)."""
    lr: float = 1e-3
    """Adam learning rate (cosine decay to 10% over the run)."""
    rho: float = 0.9
    """Weight decay of the loss over the rollout: step t counts rho**t."""
    gamma: float = 0.95
    """Discount of the Q ensemble's TD targets."""
    tau: float = 0.01
    """EMA rate of the target Q network."""
    holdout_every: int = 10
    """Every N-th episode of each dataset is held out for evaluation."""
    eval_every: int = 1000
    """Steps between held-out evaluations (and checkpoints)."""
    seed: int = 0
    """Seed of the initial weights and the window sampling."""
    device: str = "auto"
    """auto (cuda when there is one), cpu or cuda[:N]."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    resume: bool = False
    """Continue from OUT/checkpoint.pt: weights, optimizer, step count and sampler state."""
    ensemble: int = -1
    """Members of the grasp ensemble whose disagreement the planner can charge (0: none; -1:
    the --init checkpoint's, 0 without one)."""
    init: str = ""
    """Fine-tune: start from this checkpoint's weights, sizes and normalisation ('default': the
    shipped model) with a fresh optimizer and step count (--preset is then the checkpoint's)."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class WorldModelEvalConfig:
    """One evaluation of a world model on held-out episodes."""

    checkpoint: str = "default"
    """World-model checkpoint, or 'default' for the one shipped with robotworld."""
    data: str = "data/wm/pick_place"
    """Dataset directories, comma-separated."""
    episodes: str = "held-out"
    """held-out (every holdout_every-th episode, as in training) or all."""
    windows: int = 2000
    """Random windows of 20 steps per dataset."""
    out: str = "runs/eval_world_model"
    """Directory for metrics.json and the plots (never the checkpoint's own folder by default)."""
    seed: int = 0
    """Seed of the window sampling."""
    device: str = "auto"
    """auto, cpu or cuda."""
    priors: str = "planning"
    """Structural priors applied while imagining: planning (what MPC imagines with), model (those
    the model was trained with), all, none, or all but some, e.g. -touch,-lift
    (robotworld.model.priors; the ablation in BENCHMARKS.md)."""
