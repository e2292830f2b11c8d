"""Typed configuration of a robotworld task, and validated overrides."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration value is unknown or out of its valid range."""


@dataclass
class TaskConfig:
    """Everything that defines one task's episodes. Tasks override the defaults."""

    task: str = "reach"
    """Task name: reach, push, lift, pick_place or pick_place_clutter."""
    episode_length: int = 100
    """Control steps per episode before truncation (20 Hz)."""
    control_hz: float = 20.0
    """Control rate; each control step runs physics_dt-long substeps."""
    physics_dt: float = 0.002
    """Physics time step in seconds."""
    action_mode: str = "ee"
    """'ee': end-effector delta xyz, delta yaw, gripper. 'joint': 7 joint deltas and gripper."""
    max_ee_step: float = 0.03
    """Metres per control step at action 1.0 in ee mode."""
    max_yaw_step: float = 0.25
    """Radians per control step at action 1.0 in ee mode."""
    max_joint_step: float = 0.1
    """Radians per control step at action 1.0 in joint mode (then clamped to velocity limits)."""
    reward_type: str = "dense"
    """'dense' (shaped, in [0, 1]) or 'sparse' (1 on success else 0)."""
    terminate_on_success: bool = True
    """End the episode on the first successful step."""
    num_distractors: int = 0
    """Extra objects on the table that the instruction does not name."""
    num_obstacles: int = 0
    """Static boxes on the table (clutter) the arm must not touch."""
    obstacle_height: tuple[float, float] = (0.04, 0.08)
    """Range of obstacle heights in metres."""
    shapes: tuple[str, ...] = ("cube", "cylinder")
    """Object shapes to draw from."""
    object_half_size: tuple[float, float] = (0.018, 0.024)
    """Range of object half-widths (m); cubes are 3.6 to 4.8 cm across."""
    object_xy_low: tuple[float, float] = (0.42, -0.18)
    """Lower corner of the region where objects start (m, robot base frame)."""
    object_xy_high: tuple[float, float] = (0.62, 0.18)
    """Upper corner of the region where objects start."""
    max_object_yaw: float = math.pi / 4
    """Objects start with a yaw drawn from [-max, max]."""
    goal_min_distance: float = 0.12
    """Goals start at least this far from where the object (or gripper) is: no free success."""
    success_tolerance: float = 0.04
    """Distance (m) within which a position goal counts as reached."""
    lift_height: float = 0.10
    """How far above the table the object must be held for lift success."""
    cameras: tuple[str, ...] = ()
    """Cameras to render into the observation: any of 'front', 'wrist'. Empty: no rendering."""
    image_size: tuple[int, int] = (96, 96)
    """Camera image height and width."""

    def __post_init__(self) -> None:
        validate(self)

    @property
    def substeps(self) -> int:
        return int(round(1.0 / (self.control_hz * self.physics_dt)))


TASK_NAMES = ("reach", "push", "lift", "pick_place", "pick_place_clutter")


def validate(cfg: TaskConfig) -> None:
    """Raise ConfigError naming the first field whose value is invalid."""
    def bad(name: str, value: Any, expected: str) -> None:
        raise ConfigError(f"config field '{name}' = {value!r} is invalid: expected {expected}")

    if cfg.task not in TASK_NAMES:
        bad("task", cfg.task, f"one of {', '.join(TASK_NAMES)}")
    if not isinstance(cfg.episode_length, int) or cfg.episode_length < 1:
        bad("episode_length", cfg.episode_length, "an integer >= 1")
    if cfg.action_mode not in ("ee", "joint"):
        bad("action_mode", cfg.action_mode, "'ee' or 'joint'")
    if cfg.reward_type not in ("dense", "sparse"):
        bad("reward_type", cfg.reward_type, "'dense' or 'sparse'")
    if not 1 <= cfg.control_hz * 1.0 <= 1000 or cfg.physics_dt <= 0:
        bad("control_hz", cfg.control_hz, "a rate in [1, 1000] Hz with physics_dt > 0")
    if abs(1.0 / (cfg.control_hz * cfg.physics_dt) - cfg.substeps) > 1e-6:
        bad("physics_dt", cfg.physics_dt, "a step that divides the control period evenly")
    for name in ("num_distractors", "num_obstacles"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or not 0 <= v <= 6:
            bad(name, v, "an integer in [0, 6]")
    for cam in cfg.cameras:
        if cam not in ("front", "wrist"):
            bad("cameras", cfg.cameras, "a list of 'front' and/or 'wrist'")
    size = cfg.image_size
    if (not isinstance(size, (list, tuple)) or len(size) != 2 or not all(isinstance(v, int) for v in size)
            or not all(16 <= v <= 1024 for v in size)):
        bad("image_size", cfg.image_size, "(height, width) each in [16, 1024]")
    lo, hi = cfg.object_half_size
    if not 0.01 <= lo <= hi <= 0.035:
        bad("object_half_size", cfg.object_half_size, "0.01 <= low <= high <= 0.035 (gripper opens 8 cm)")
    for s in cfg.shapes:
        if s not in ("cube", "cylinder"):
            bad("shapes", cfg.shapes, "a list of 'cube' and/or 'cylinder'")
    if not cfg.shapes:
        bad("shapes", cfg.shapes, "at least one shape")
    for name in ("max_ee_step", "max_yaw_step", "max_joint_step", "success_tolerance"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and 0 < v < 1):
            bad(name, v, "a number in (0, 1)")


def _scalar(text: str) -> Any:
    """'64' -> 64, '0.2' -> 0.2, anything else stays text: one item of a comma-separated value."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def apply_overrides(cfg: TaskConfig, overrides: dict[str, Any]) -> TaskConfig:
    """A copy of cfg with overrides applied; unknown names and bad values raise ConfigError."""
    names = {f.name: f for f in dataclasses.fields(TaskConfig)}
    clean: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in names:
            close = [n for n in names if n.startswith(key[:3])]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown config field '{key}' for task '{cfg.task}'{hint}; "
                              f"valid fields: {', '.join(sorted(names))}")
        default = getattr(cfg, key)
        if isinstance(default, tuple) and isinstance(value, (list, tuple)):
            value = tuple(value)
        elif isinstance(default, tuple) and isinstance(value, str):
            value = tuple(_scalar(v.strip()) for v in value.split(",") if v.strip())
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"config field '{key}' = {value!r} is invalid: expected true or false")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        clean[key] = value
    try:
        return dataclasses.replace(cfg, **clean)
    except TypeError as e:  # pragma: no cover - replace only raises for unknown names
        raise ConfigError(str(e)) from e
