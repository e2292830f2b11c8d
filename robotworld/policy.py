"""What a policy is, and what it is told about the world beyond its observations.

    class MyPolicy:
        def reset(self, seed=None, scene=None): ...
        def act(self, obs): return chunk                  # (H, A), H >= 1
        def sample(self, obs, k): return chunks           # optional: (k, H, A) proposals

``Scene`` is what a perception module or a robot's configuration hands a policy at the start of
an episode: the task, the obstacle boxes, the action bounds and scale. In simulation
``Scene.of(env)`` reads it from a robotworld environment; on a robot the ROS node builds it from
its topics. Evaluation, collection and the ROS node all drive policies through this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ActionScale:
    """How far one unit of action moves the robot (the environment's ``TaskConfig``)."""

    yaw_step: float = 0.25
    """Radians of tool yaw per unit of the yaw action (``max_yaw_step``)."""
    ee_step: float = 0.03
    """Metres of tool motion per unit of a position action (``max_ee_step``)."""
    table_top: float = 0.0
    """Height of the table top (m)."""
    control_dt: float = 0.05
    """Seconds per control step (``1 / control_hz``): the joints' velocity limits hold over it."""

    @classmethod
    def of(cls, env) -> ActionScale:
        """The scale of a robotworld environment."""
        cfg = env.unwrapped.cfg
        return cls(float(cfg.max_yaw_step), float(cfg.max_ee_step), 0.0, 1.0 / float(cfg.control_hz))


@dataclass(frozen=True)
class Scene:
    """What a policy knows of an episode beyond its observations."""

    task: str
    """The task name (``sims.TASK_NAMES``)."""
    low: np.ndarray
    """(A,) lower action bounds."""
    high: np.ndarray
    """(A,) upper action bounds."""
    obstacles: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.float32))
    """(K, 6) obstacle boxes: centres and half extents (m), axis-aligned."""
    scale: ActionScale = ActionScale()
    """The action scale."""
    env: Any = None
    """The simulated environment itself, for privileged policies (the scripted experts) only;
    None on a robot."""

    @classmethod
    def of(cls, env) -> Scene:
        """The scene of a robotworld environment's current episode (call after ``reset``)."""
        u = env.unwrapped
        episode = getattr(u, "episode", None)
        obstacles = [] if episode is None else episode.obstacles
        boxes = np.array([[*o.pos, *o.half] for o in obstacles], dtype=np.float32).reshape(-1, 6)
        return cls(u.cfg.task, np.asarray(u.action_space.low), np.asarray(u.action_space.high), boxes,
                   ActionScale.of(u), env)


@runtime_checkable
class Policy(Protocol):
    """Anything that acts: reset at the start of an episode, then an action chunk per call.

    Given the episode's seed, a policy that draws random numbers restarts them from (its own
    seed, the episode's), so any episode of an evaluation replays the same when run alone.

    Optional attributes a caller reads when present: ``env_overrides`` (task config fields its
    observations need, e.g. cameras), ``reads_state`` (False when it needs no object and zone
    poses; True is assumed) and ``warm_up(obs)`` (run once before acting for real).
    """

    def reset(self, seed: int | None = None, scene: Scene | None = None) -> None: ...

    def act(self, obs: dict) -> np.ndarray:
        """(H, A) the next H actions (H may be 1); what it imagined may be kept in ``last_info``."""
        ...


@runtime_checkable
class Proposer(Protocol):
    """A policy that can also propose: k distinct candidate chunks for the scorer to rank."""

    def sample(self, obs: dict, k: int) -> np.ndarray:
        """(k, H, A) candidate chunks."""
        ...
