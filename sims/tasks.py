"""Task logic, independent of the physics engine: what an episode is, reward and success.

Each task has a ``default_config()``; overrides go through ``sims.config.apply_overrides``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from sims import scene
from sims.config import ConfigError, TaskConfig
from sims.physics import EpisodeSpec, ObjectSpec, ObstacleSpec, WorldState

HOME_TCP = np.array([0.307, 0.0, 0.487])
_OBJECT_SPACING = 0.09
_OBSTACLE_CLEARANCE = 0.13
MAX_OBSTACLES = 6
"""The most obstacles a pick_place_clutter layout always has room for (sims.config refuses more)."""


def default_config(task: str) -> TaskConfig:
    """The defaults of one task (episode length, objects, obstacles)."""
    per_task = {
        "reach": dict(episode_length=50),
        "push": dict(episode_length=100, shapes=("cube",)),
        "lift": dict(episode_length=80),
        "pick_place": dict(episode_length=120, num_distractors=1),
        "pick_place_clutter": dict(episode_length=150, num_distractors=1, num_obstacles=3),
    }
    if task not in per_task:
        from sims.config import TASK_NAMES, ConfigError
        raise ConfigError(f"unknown task '{task}': expected one of {', '.join(TASK_NAMES)}")
    return dataclasses.replace(TaskConfig(task=task), **per_task[task])


def _uniform(rng: np.random.Generator, low, high) -> np.ndarray:
    """rng.uniform(low, high) for sequences low and high: the same draws and the same numbers
    (numpy computes low + (high - low) * U as well; tests/test_envs.py checks it) at about a
    seventh of its cost, which checks and broadcasts its array arguments at every call."""
    lo = np.asarray(low, float)
    return lo + (np.asarray(high, float) - lo) * rng.random(lo.shape)


def _far_from(p: np.ndarray, others: list[np.ndarray], dist: float) -> bool:
    xy = p[:2]
    for o in others:
        d = xy - o[:2]
        if not math.sqrt(d.dot(d)) >= dist:  # np.linalg.norm's own formula, at a third of its cost
            return False
    return True


def _sample_xy(rng, cfg: TaskConfig, avoid: list[np.ndarray], dist: float,
               low=None, high=None) -> np.ndarray:
    low = cfg.object_xy_low if low is None else low
    high = cfg.object_xy_high if high is None else high
    for _ in range(200):
        xy = _uniform(rng, low, high)
        if _far_from(xy, avoid, dist):
            return xy
    raise PlacementError("could not place an object without overlap; widen the object region")


def sample_objects(rng: np.random.Generator, cfg: TaskConfig) -> list[ObjectSpec]:
    colours = list(scene.COLOURS)
    order = rng.permutation(len(colours))
    objects: list[ObjectSpec] = []
    for i in range(scene.num_objects(cfg)):
        shape = cfg.shapes[int(rng.integers(len(cfg.shapes)))]
        half = float(rng.uniform(*cfg.object_half_size))
        xy = _sample_xy(rng, cfg, [o.pos for o in objects], _OBJECT_SPACING)
        yaw = float(rng.uniform(-cfg.max_object_yaw, cfg.max_object_yaw))
        objects.append(ObjectSpec(shape, half, colours[order[i]], np.array([*xy, half]), yaw))
    return objects


def _zone_colour(rng, objects: list[ObjectSpec]) -> str:
    free = [c for c in scene.COLOURS if c not in {o.colour for o in objects}]
    return free[int(rng.integers(len(free)))]


def _name(o: ObjectSpec) -> str:
    return f"{o.colour} {o.shape}"


def instruction_slots(task: str, episode: EpisodeSpec) -> dict[str, str]:
    """What an instruction template may name in this episode: ``object`` (the target object,
    e.g. "red cube") and ``target`` (the zone, e.g. "blue zone", or reach's "green marker");
    a task without one has no such slot (lift has no target)."""
    slots = {}
    if task != "reach" and episode.objects:
        slots["object"] = _name(episode.objects[0])
    if task == "reach":
        slots["target"] = "green marker"
    elif episode.zone is not None:
        slots["target"] = f"{episode.zone_colour} zone"
    return slots


def _pick(rng, templates: tuple[str, ...], **kw) -> str:
    return templates[int(rng.integers(len(templates)))].format(**kw)


REACH_TEMPLATES = ("move the gripper to the green marker", "reach the green marker",
                   "touch the green marker with the gripper")
PUSH_TEMPLATES = ("push the {obj} to the {zone} zone", "slide the {obj} onto the {zone} zone",
                  "push the {obj} into the {zone} area")
LIFT_TEMPLATES = ("pick up the {obj}", "lift the {obj}", "grasp the {obj} and lift it")
PLACE_TEMPLATES = ("put the {obj} in the {zone} zone", "place the {obj} on the {zone} zone",
                   "move the {obj} to the {zone} area")


def sample_reach(rng, cfg: TaskConfig) -> EpisodeSpec:
    objects = sample_objects(rng, cfg)
    while True:
        goal = _uniform(rng, (0.38, -0.22, 0.06), (0.66, 0.22, 0.35))
        if np.linalg.norm(goal - HOME_TCP) >= max(cfg.goal_min_distance, 3 * cfg.success_tolerance):
            break
    return EpisodeSpec(objects, goal, _pick(rng, REACH_TEMPLATES), goal_marker=True)


def _zone_goal(rng, cfg: TaskConfig, objects: list[ObjectSpec], low, high) -> np.ndarray:
    """A zone on the table far enough from the target object and clear of the others."""
    target = objects[0]
    for _ in range(400):
        xy = _uniform(rng, low, high)
        d = np.linalg.norm(xy - target.pos[:2])
        if d >= cfg.goal_min_distance and _far_from(xy, [o.pos for o in objects[1:]], 0.08):
            return np.array([*xy, target.half])
    raise RuntimeError("could not place the goal zone; widen the object region")


def sample_push(rng, cfg: TaskConfig) -> EpisodeSpec:
    objects = sample_objects(rng, cfg)
    lo, hi = np.array(cfg.object_xy_low), np.array(cfg.object_xy_high)
    for _ in range(400):
        ang = rng.uniform(-math.pi, math.pi)
        dist = rng.uniform(cfg.goal_min_distance, cfg.goal_min_distance + 0.06)
        xy = objects[0].pos[:2] + dist * np.array([math.cos(ang), math.sin(ang)])
        if np.all(xy >= lo - 0.02) and np.all(xy <= hi + 0.02):
            break
    goal = np.array([*xy, objects[0].half])
    zc = _zone_colour(rng, objects)
    return EpisodeSpec(objects, goal, _pick(rng, PUSH_TEMPLATES, obj=_name(objects[0]), zone=zc),
                       zone=np.array([*xy, 0.0005]), zone_colour=zc)


def sample_lift(rng, cfg: TaskConfig) -> EpisodeSpec:
    objects = sample_objects(rng, cfg)
    goal = objects[0].pos + np.array([0.0, 0.0, cfg.lift_height])
    return EpisodeSpec(objects, goal, _pick(rng, LIFT_TEMPLATES, obj=_name(objects[0])))


class PlacementError(ConfigError):
    """The sampler found no layout of the episode's obstacles that keeps them apart."""


_LAYOUT_TRIES = 50


def _obstacles(rng, cfg: TaskConfig, avoid: list[np.ndarray]) -> list[ObstacleSpec]:
    """The episode's obstacles, each _OBSTACLE_CLEARANCE from the objects, the goal and one
    another. Placed one by one; where a layout leaves no room for the next, the whole set is
    drawn again (an episode placed at the first try draws exactly what it always did)."""
    for _ in range(_LAYOUT_TRIES):
        out: list[ObstacleSpec] = []
        try:
            for _ in range(cfg.num_obstacles):
                half = np.array([rng.uniform(0.015, 0.03), rng.uniform(0.015, 0.03),
                                 0.5 * rng.uniform(*cfg.obstacle_height)])
                xy = _sample_xy(rng, cfg, avoid + [o.pos for o in out], _OBSTACLE_CLEARANCE,
                                low=(0.36, -0.28), high=(0.70, 0.28))
                out.append(ObstacleSpec(np.array([*xy, half[2]]), half))
            return out
        except PlacementError:
            continue
    raise PlacementError(f"could not place {cfg.num_obstacles} obstacles {_OBSTACLE_CLEARANCE:.2f} m apart "
                         f"from each other, the objects and the goal in {_LAYOUT_TRIES} layouts; "
                         f"up to num_obstacles = {MAX_OBSTACLES} fitted in 2,000 of 2,000 seeded layouts")


def sample_pick_place(rng, cfg: TaskConfig) -> EpisodeSpec:
    objects = sample_objects(rng, cfg)
    goal = _zone_goal(rng, cfg, objects, (0.40, -0.22), (0.64, 0.22))
    zc = _zone_colour(rng, objects)
    obstacles = _obstacles(rng, cfg, [o.pos for o in objects] + [goal])
    return EpisodeSpec(objects, goal, _pick(rng, PLACE_TEMPLATES, obj=_name(objects[0]), zone=zc),
                       zone=np.array([goal[0], goal[1], 0.0005]), zone_colour=zc,
                       obstacles=obstacles)


# ---- success and reward ---------------------------------------------------------------------
def _resting(s: WorldState, ep: EpisodeSpec) -> bool:
    return bool(s.obj_pos[0, 2] < ep.objects[0].half + 0.01)


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two 1-D arrays (math.dist: far cheaper than np.linalg.norm
    at this size, and reward is computed every control step)."""
    return math.dist(a.tolist(), b.tolist())


def success(task: str, s: WorldState, ep: EpisodeSpec, cfg: TaskConfig) -> bool:
    tol = cfg.success_tolerance
    if task == "reach":
        return _dist(s.tcp_pos, ep.goal) < tol
    if task == "push":
        return _dist(s.obj_pos[0, :2], ep.goal[:2]) < tol and _resting(s, ep)
    if task == "lift":
        return bool(s.grasped and s.obj_pos[0, 2] > ep.goal[2])
    # pick_place, pick_place_clutter: inside the zone, resting on the table, released
    return _dist(s.obj_pos[0, :2], ep.goal[:2]) < tol and _resting(s, ep) and not s.grasped


def _closeness(d: float, scale: float = 10.0) -> float:
    return 1.0 - math.tanh(scale * d)


def dense_reward(task: str, s: WorldState, ep: EpisodeSpec) -> float:
    """Shaped reward in [0, 1]: 1 only at success-like states."""
    if task == "reach":
        return _closeness(_dist(s.tcp_pos, ep.goal))
    obj = s.obj_pos[0]
    approach = _closeness(_dist(s.tcp_pos, obj))
    to_goal = _closeness(_dist(obj, ep.goal))
    if task == "push":
        return 0.3 * approach + 0.7 * to_goal
    if task == "lift":
        height = min(max(obj[2] - ep.objects[0].half, 0.0) / (ep.goal[2] - ep.objects[0].half), 1.0)
        return 0.25 * approach + 0.25 * float(s.grasped) + 0.5 * height * float(s.grasped)
    return 0.2 * approach + 0.2 * float(s.grasped) + 0.6 * to_goal


GOAL_OF: dict[str, str] = {"reach": "tool", "push": "object", "lift": "object", "pick_place": "object",
                           "pick_place_clutter": "object"}
"""What each task brings to its goal: the tool, or the first object (a planner's progress measure)."""

SAMPLERS: dict[str, Callable[[np.random.Generator, TaskConfig], EpisodeSpec]] = {
    "reach": sample_reach,
    "push": sample_push,
    "lift": sample_lift,
    "pick_place": sample_pick_place,
    "pick_place_clutter": sample_pick_place,
}
