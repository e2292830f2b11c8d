"""Typed configs of the VLA's entry points, importable without torch (the CLI builds its parser
from them on every start)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VLAConfig:
    """The VLA network's sizes (what the data does not fix)."""

    chunk: int = 8
    """Actions per predicted chunk (H)."""
    channels: tuple[int, ...] = (16, 32, 32, 32)
    """Channels of each camera's four conv layers (strides 2, 2, 1, 1)."""
    keypoints: int = 32
    """Image keypoints per camera (spatial softmax over a 1x1 conv of the last map)."""
    flat: int = 64
    """Width of the linear read of each camera's whole last feature map."""
    hidden: int = 256
    """Width of the trunk and of the flow-matching head."""
    lang: int = 64
    """Width the sentence embedding is projected to before it joins the trunk."""
    flow_steps: int = 10
    """Euler steps from noise to a chunk when sampling."""
    time_dim: int = 32
    """Size of the flow time's sinusoidal embedding."""


@dataclass
class PolicyTrainConfig:
    """One VLA training run (behaviour cloning: flow matching on demonstration chunks)."""

    data: str = "data/vla/reach"
    """Dataset directories with camera frames and instructions, comma-separated (one per task
    for the multi-task policy); their ``label`` field (a teacher's clean action) is the target
    where it exists, else the applied action."""
    out: str = "runs/vla"
    """Run directory: checkpoints, TensorBoard logs, metrics."""
    steps: int = 20000
    """Gradient steps in total (a resumed run continues to this count)."""
    batch_size: int = 64
    """Frames per gradient step."""
    lr: float = 3e-4
    """AdamW learning rate (cosine decay to 10% over the run)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    chunk: int = 8
    """Actions per predicted chunk (H)."""
    estimator_weight: float = 1.0
    """Weight of the auxiliary loss that estimates the object and zone positions from the
    cameras (what ``vla+imagine --state estimated`` imagines from)."""
    estimator_loss: str = "huber"
    """huber (quadratic within 5 cm, linear beyond: a few frames of an object in flight do not
    dominate the gradient) or mse."""
    shift: int = 4
    """Random shift of each camera frame in pixels during training (0: none), the augmentation
    image-based behaviour cloning relies on."""
    paraphrase: float = 0.0
    """Probability that a training frame's instruction is rewritten with another phrasing of
    the same task, object and zone (``robotworld.vla.phrasings``; none of the held-out ones)."""
    holdout_every: int = 20
    """Every N-th episode of each dataset is held out for evaluation."""
    eval_every: int = 1000
    """Steps between held-out evaluations (and checkpoints)."""
    seed: int = 0
    """Seed of the initial weights and the batch sampling."""
    device: str = "auto"
    """auto (cuda when there is one), cpu or cuda[:N]."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    init: str = ""
    """Start from this VLA checkpoint's weights ('default': the shipped one) with a fresh optimizer
    and schedule: a fine-tune (its sizes and normalisation are kept; ignored with --resume)."""
    resume: bool = False
    """Continue from OUT/checkpoint.pt: weights, optimizer, step count and sampler state."""
    progress: bool = True
    """Show a progress bar."""
