"""Imagine: the latent world model, its checkpoints, training and evaluation.

    from robotworld.model import load
    wm = load("default")                 # the shipped multi-task model
    z = wm.encode(obs, task="pick_place")
    out = wm.imagine(z, actions)         # actions (B, H, A) -> latents, reward, success/grasp/collision
"""

from robotworld.model.checkpoint import CheckpointError, load, save
from robotworld.model.world_model import Imagined, ModelConfig, ModelSpec, WorldModel, model_config

__all__ = ["CheckpointError", "Imagined", "ModelConfig", "ModelSpec", "WorldModel", "load", "model_config", "save"]
