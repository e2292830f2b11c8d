"""robotworld's simulated worlds: a MuJoCo manipulation suite and its PyBullet twin.

Importing ``sims`` registers the Gymnasium ids ``robotworld/Reach-v0``, ``robotworld/Push-v0``,
``robotworld/Lift-v0``, ``robotworld/PickPlace-v0`` and ``robotworld/PickPlaceClutter-v0``.

    import sims
    env = sims.make("pick_place", sim="mujoco", cameras=("front",), episode_length=200)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from sims.config import TASK_NAMES, ConfigError, TaskConfig, apply_overrides
from sims.tasks import default_config

GYM_IDS = {
    "reach": "robotworld/Reach-v0",
    "push": "robotworld/Push-v0",
    "lift": "robotworld/Lift-v0",
    "pick_place": "robotworld/PickPlace-v0",
    "pick_place_clutter": "robotworld/PickPlaceClutter-v0",
}
SIMS = ("mujoco", "pybullet")


def make_config(task: str, **overrides: Any) -> TaskConfig:
    """The task's default config with overrides applied (validated)."""
    return apply_overrides(default_config(task), overrides)


def make(task: str, sim: str = "mujoco", render_mode: str | None = None, **overrides: Any):
    """Build a task environment.

    Args:
        task: one of ``TASK_NAMES``.
        sim: 'mujoco' or 'pybullet'.
        render_mode: None or 'rgb_array' (front camera).
        **overrides: fields of :class:`sims.config.TaskConfig`.
    """
    if sim not in SIMS:
        raise ConfigError(f"unknown sim '{sim}': expected one of {', '.join(SIMS)}")
    from sims.env import RobotworldEnv

    return RobotworldEnv(make_config(task, **overrides), sim=sim, render_mode=render_mode)


def _entry(task: str, sim: str = "mujoco", render_mode: str | None = None, **overrides: Any):
    return make(task, sim=sim, render_mode=render_mode, **overrides)


for _task, _id in GYM_IDS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point="sims:_entry", kwargs={"task": _task},
                     max_episode_steps=None, disable_env_checker=True)

__all__ = ["GYM_IDS", "TASK_NAMES", "ConfigError", "TaskConfig", "default_config", "make",
           "make_config"]
