"""The vision-language-action policy's network, training and checkpoints.

    from robotworld.vla import load
    vla = load("default")                # robotworld/checkpoints/vla.pt
    # policies.vla.VLAPolicy runs it in an episode; ImaginePolicy scores its samples first
"""

from robotworld.vla.checkpoint import VLACheckpointError, load, save
from robotworld.vla.configs import PolicyTrainConfig, VLAConfig

__all__ = ["PolicyTrainConfig", "VLACheckpointError", "VLAConfig", "load", "save"]
