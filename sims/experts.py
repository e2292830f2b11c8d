"""Scripted experts, one per task, acting on privileged state.

Each expert is a small state machine over the true world state (object poses, contacts). With
``noise > 0`` it adds Gaussian noise to its motion commands, which yields the failed grasps,
near-misses and collisions a world model needs to see as well as successes. With
``fumble > 0`` it also inverts its gripper command for spells of 3-10 steps (``fumble`` is the
chance per step that one starts): a gripper that closes in the air above the object, or
arrives closed, and grasps nothing. A planner searching the model tries exactly that, so the
model has to have seen it fail.
"""

from __future__ import annotations

import math

import numpy as np

from sims.control import tool_yaw
from sims.physics import WorldState

OPEN, CLOSE = 1.0, -1.0


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def quat_yaw(q: np.ndarray) -> float:
    """Yaw about world z of a w, x, y, z quaternion."""
    w, x, y, z = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class Expert:
    """Base: turns a tool target into an action; subclasses choose the target."""

    def __init__(self, env, noise: float = 0.0, seed: int | None = None, fumble: float = 0.0) -> None:
        self.env = env
        self.noise = noise
        self.fumble = fumble
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.phase = "start"
        self.timer = 0
        self.fumbling = 0
        self.label = None

    def reset(self, seed: int | None = None) -> None:
        """Start an episode; given the episode's seed, the noise restarts from (seed of the
        expert, seed of the episode), so that the episode replays the same alone."""
        self.phase, self.timer, self.fumbling = "start", 0, 0
        if seed is not None:
            self.rng = np.random.default_rng([self.seed or 0, seed])

    def _go(self, s: WorldState, target: np.ndarray, grip: float, yaw: float = 0.0,
            speed: float = 1.0) -> np.ndarray:
        cfg = self.env.unwrapped.cfg
        a = np.empty(5)
        a[:3] = np.clip((target - s.tcp_pos) / cfg.max_ee_step, -speed, speed)
        a[3] = np.clip(_wrap(yaw - tool_yaw(s.tcp_rot)) / cfg.max_yaw_step, -1, 1)
        a[4] = grip
        self.label = np.clip(a, -1.0, 1.0).astype(np.float32)  # what it meant to do, before noise and fumbles
        if self.noise > 0:
            a[:4] += self.rng.normal(0.0, self.noise, 4)
        if self.fumble > 0:  # a spell of 3-10 steps with the gripper command inverted
            if self.fumbling == 0 and self.rng.random() < self.fumble:
                self.fumbling = int(self.rng.integers(3, 11))
            if self.fumbling > 0:
                self.fumbling -= 1
                a[4] = -grip
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def act(self, obs=None) -> np.ndarray:
        env = self.env.unwrapped
        return self.policy(env.world_state, env.episode)

    def policy(self, s: WorldState, ep) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class ReachExpert(Expert):
    def policy(self, s, ep):
        return self._go(s, ep.goal, OPEN)


def grasp_yaw(s: WorldState, ep) -> float:
    """Tool yaw that lines the fingers up with the object's faces, nearest to zero."""
    if ep.objects[0].shape != "cube":
        return 0.0
    y = quat_yaw(s.obj_quat[0])
    return (y + math.pi / 4) % (math.pi / 2) - math.pi / 4


class PickExpert(Expert):
    """Lift, and pick-and-place (with a cruise height above clutter)."""

    def __init__(self, env, noise: float = 0.0, seed: int | None = None, place: bool = True,
                 fumble: float = 0.0):
        super().__init__(env, noise, seed, fumble)
        self.place = place

    def cruise(self, ep) -> float:
        top = max((o.pos[2] + o.half[2] for o in ep.obstacles), default=0.0)
        return max(0.12, top + 2 * ep.objects[0].half + 0.06)

    def policy(self, s, ep):
        obj, half = s.obj_pos[0], ep.objects[0].half
        yaw = grasp_yaw(s, ep)
        grasp_z = max(obj[2], 0.02)
        hover = np.array([obj[0], obj[1], max(grasp_z + 0.08, self.cruise(ep) if self.place else 0)])
        self.timer += 1
        if self.phase in ("start", "approach"):
            self.phase = "approach"
            xy_err = np.linalg.norm(s.tcp_pos[:2] - obj[:2])
            if xy_err > 0.02 and s.tcp_pos[2] < hover[2] - 0.03:  # rise before crossing
                return self._go(s, np.array([*s.tcp_pos[:2], hover[2]]), OPEN, yaw)
            if xy_err < 0.008 and abs(_wrap(yaw - tool_yaw(s.tcp_rot))) < 0.08:
                self.phase = "descend"
            return self._go(s, hover, OPEN, yaw)
        if self.phase == "descend":
            target = np.array([obj[0], obj[1], grasp_z])
            if abs(s.tcp_pos[2] - grasp_z) < 0.006:
                self.phase, self.timer = "close", 0
            return self._go(s, target, OPEN, yaw, speed=0.7)
        if self.phase == "close":
            if self.timer >= 6:
                self.phase = "lift" if s.grasped else "retry"
            return self._go(s, np.array([obj[0], obj[1], grasp_z]), CLOSE, yaw)
        if self.phase == "retry":
            self.phase = "approach"
            return self._go(s, hover, OPEN, yaw)
        if not s.grasped and self.phase in ("lift", "carry", "lower"):
            self.phase = "approach"
            return self._go(s, hover, OPEN, yaw)
        goal = ep.goal
        if self.phase == "lift":
            top = goal[2] + 0.03 if not self.place else self.cruise(ep)
            if s.tcp_pos[2] > top - 0.01:
                self.phase = "carry"
            return self._go(s, np.array([*s.tcp_pos[:2], top]), CLOSE, yaw, speed=0.7)
        if not self.place:
            return self._go(s, np.array([*s.tcp_pos[:2], goal[2] + 0.03]), CLOSE, yaw)
        if self.phase == "carry":
            target = np.array([goal[0], goal[1], self.cruise(ep)])
            if np.linalg.norm(obj[:2] - goal[:2]) < 0.01:
                self.phase = "lower"
            return self._go(s, target + (s.tcp_pos - obj) * [1, 1, 0], CLOSE, yaw, speed=0.6)
        if self.phase == "lower":
            target = np.array([goal[0], goal[1], half + 0.008]) + (s.tcp_pos - obj) * [1, 1, 0]
            target[2] += s.tcp_pos[2] - obj[2]
            if obj[2] < half + 0.012:
                self.phase, self.timer = "release", 0
            return self._go(s, target, CLOSE, yaw, speed=0.7)
        if self.phase == "release":
            if self.timer >= 4:
                self.phase = "retreat"
            return self._go(s, s.tcp_pos, OPEN, yaw)
        return self._go(s, np.array([*s.tcp_pos[:2], self.cruise(ep)]), OPEN, yaw)


class PushExpert(Expert):
    """Pushes the object along the line to the goal with closed fingers, re-aligning as needed."""

    HEIGHT = 0.022

    def policy(self, s, ep):
        obj, half = s.obj_pos[0], ep.objects[0].half
        to_goal = ep.goal[:2] - obj[:2]
        dist = float(np.linalg.norm(to_goal))
        if dist < 1e-6:
            return self._go(s, s.tcp_pos, CLOSE)
        d = to_goal / dist
        rel = s.tcp_pos[:2] - obj[:2]
        along = float(rel @ d)
        lateral = float(abs(rel @ np.array([-d[1], d[0]])))
        behind = obj[:2] - d * (half + 0.025)
        yaw = _wrap(math.atan2(d[1], d[0]) + math.pi / 2)
        yaw = (yaw + math.pi / 2) % math.pi - math.pi / 2
        low = self.HEIGHT
        if self.phase == "push":
            if lateral > 0.02 or along > -half + 0.005:
                self.phase = "start"
            else:
                step = min(0.03, dist)
                target = np.array([*(obj[:2] + d * step - d * (half + 0.01)), low])
                return self._go(s, target, CLOSE, yaw, speed=0.6)
        # reposition: up, over the pre-push point, down
        far = np.linalg.norm(s.tcp_pos[:2] - behind)
        if far > 0.015:
            if s.tcp_pos[2] < 0.08 and (along > -half - 0.01 or lateral > 0.02):
                return self._go(s, np.array([*s.tcp_pos[:2], 0.1]), CLOSE, yaw)
            z = 0.1 if far > 0.04 else low
            return self._go(s, np.array([*behind, z]), CLOSE, yaw)
        if s.tcp_pos[2] > low + 0.006:
            return self._go(s, np.array([*behind, low]), CLOSE, yaw)
        self.phase = "push"
        return self._go(s, np.array([*behind, low]), CLOSE, yaw)


def make_expert(env, noise: float = 0.0, seed: int | None = None, fumble: float = 0.0) -> Expert:
    """The scripted expert for env's task."""
    task = env.unwrapped.cfg.task
    if task == "reach":
        return ReachExpert(env, noise, seed, fumble)
    if task == "push":
        return PushExpert(env, noise, seed, fumble)
    return PickExpert(env, noise, seed, place=task != "lift", fumble=fumble)
