"""Many copies of a task stepped at once, through Gymnasium's vector API.

``AsyncVectorEnv`` runs one process per copy, so the physics of all copies runs on all cores.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym


def make_vec(task: str, num_envs: int, sim: str = "mujoco", asynchronous: bool = True,
             **overrides: Any) -> gym.vector.VectorEnv:
    """A vector of ``num_envs`` copies of a task (processes when asynchronous)."""
    import sims

    sims.make_config(task, **overrides)  # fail here, in this process, on bad overrides
    fns = [lambda: sims.make(task, sim=sim, **overrides) for _ in range(num_envs)]
    if asynchronous:
        # Text observations cannot live in shared memory; pipes carry them instead.
        return gym.vector.AsyncVectorEnv(fns, shared_memory=False, context="spawn")
    return gym.vector.SyncVectorEnv(fns)
