"""Imagine: the latent world model, its checkpoints, training and evaluation.

    from robotworld.model import load
    wm = load("default")                 # the shipped multi-task model
    start = wm.encode(obs, task="pick_place")   # an immutable Start
    out = wm.imagine(start, actions)     # actions (B, H, A) -> latents, reward, success/grasp/collision

Names are imported on first use, so that ``robotworld.model.configs`` (and the CLI) load
without torch.
"""

from importlib import import_module
from typing import Any

_NAMES = {
    "CheckpointError": "robotworld.model.checkpoint", "load": "robotworld.model.checkpoint",
    "save": "robotworld.model.checkpoint", "Imagined": "robotworld.model.world_model",
    "Start": "robotworld.model.world_model", "Priors": "robotworld.model.priors",
    "ModelConfig": "robotworld.model.world_model", "ModelSpec": "robotworld.model.world_model",
    "WorldModel": "robotworld.model.world_model", "model_config": "robotworld.model.world_model",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'robotworld.model' has no attribute {name!r}")
