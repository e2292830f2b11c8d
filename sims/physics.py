"""Engine-neutral types shared by the MuJoCo suite and its PyBullet twin."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np


@dataclass
class ObjectSpec:
    """One task object as drawn for an episode."""

    shape: str  # 'cube' or 'cylinder'
    half: float  # half-width (and half-height) in m
    colour: str
    pos: np.ndarray  # (3,) centre
    yaw: float


@dataclass
class ObstacleSpec:
    pos: np.ndarray  # (3,) centre
    half: np.ndarray  # (3,) half extents


@dataclass
class EpisodeSpec:
    """What a task draws at reset: the scene and the goal."""

    objects: list[ObjectSpec]
    goal: np.ndarray  # (3,)
    instruction: str
    zone: np.ndarray | None = None  # (3,) centre of the place / push zone, if shown
    zone_colour: str = "blue"
    goal_marker: bool = False
    obstacles: list[ObstacleSpec] = field(default_factory=list)


# A grasp is both finger pads touching object 0 *with the object between them*: the pads'
# opening must be at least this fraction of the object's width. Pads pinching a tipped cube's
# top edge also both touch it, at an opening near a third of its width, and lose it on lifting.
# Measured on 15 seeded expert episodes per object task: real grasps never open below 0.65 of
# the width in MuJoCo (0.78 once lifted) nor below 0.97 in PyBullet.
GRASP_MIN_FRACTION = 0.5


def grasp_min_opening(episode: EpisodeSpec) -> float:
    """Smallest finger opening (m) at which touching object 0 with both pads is a grasp."""
    return GRASP_MIN_FRACTION * 2.0 * episode.objects[0].half if episode.objects else 0.0


class WorldState(NamedTuple):
    """What tasks and experts read after each step (base frame, metres, radians)."""

    q: np.ndarray  # (7,)
    dq: np.ndarray  # (7,)
    finger: float  # opening between the fingers, m
    tcp_pos: np.ndarray  # (3,)
    tcp_rot: np.ndarray  # (3, 3)
    tcp_quat: np.ndarray  # (4,) w, x, y, z
    obj_pos: np.ndarray  # (N, 3)
    obj_quat: np.ndarray  # (N, 4) w, x, y, z
    grasped: bool  # both pads touch object 0 and hold it between them (see grasp_min_opening)
    collision: bool  # arm or fingers touch the table or an obstacle
    # optional: the fields above gathered in one float64 array, laid out as below,
    # for an engine that reads them in one call (the env then casts the observation from it)
    flat: np.ndarray | None = None


# the layout of WorldState.flat: the 22 proprio values in observation order (q, dq, finger,
# tool position, tool quaternion), then the tool rotation (9, row-major), then each object's
# position and quaternion (7 per object), which is the objects observation. The proprio slices
# are the observation's layout too, and robotworld's world model reads them from here.
FLAT_PROPRIO = slice(0, 22)
FLAT_Q = slice(0, 7)
FLAT_DQ = slice(7, 14)
FLAT_FINGER = 14
FLAT_TCP_POS = slice(15, 18)
FLAT_TCP_QUAT = slice(18, 22)
FLAT_ROT = slice(22, 31)
FLAT_OBJECTS = 31


class Physics(Protocol):
    """What an engine backend provides to the environment."""

    def reset(self, episode: EpisodeSpec) -> None: ...
    def step(self, ctrl: np.ndarray) -> bool: ...  # returns False if the sim went unstable
    # step(ctrl) == begin(ctrl); advance(); finish(): advance is the physics, finish the check
    def begin(self, ctrl: np.ndarray) -> None: ...
    def advance(self) -> None: ...
    def finish(self) -> bool: ...
    def state(self) -> WorldState: ...
    def jacobian(self) -> np.ndarray: ...  # (6, 7)
    def link_contact(self) -> bool: ...  # an arm link (not the gripper) touches the table or an obstacle
    def render(self, camera: str, height: int, width: int) -> np.ndarray: ...
    def close(self) -> None: ...
