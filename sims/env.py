"""The Gymnasium environment shared by every task and both engines."""

from __future__ import annotations

import math
import string
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sims import scene, tasks
from sims.config import TaskConfig
from sims.control import EEController
from sims.physics import FLAT_OBJECTS, FLAT_PROPRIO, FLAT_Q, FLAT_ROT, FLAT_TCP_POS, EpisodeSpec, Physics, WorldState

PROPRIO_DIM = 22  # q (7), dq (7), finger opening (1), tcp position (3), tcp quaternion (4)
OBJECT_DIM = 7  # position (3), quaternion w x y z (4)
INSTRUCTION_LEN = 128
_CHARSET = string.ascii_lowercase + string.digits + " ,.'-"


def make_physics(cfg: TaskConfig, sim: str) -> Physics:
    if sim == "mujoco":
        from sims.mujoco_physics import MujocoPhysics
        return MujocoPhysics(cfg)
    if sim == "pybullet":
        from sims.bullet_physics import BulletPhysics
        return BulletPhysics(cfg)
    raise ValueError(f"unknown sim '{sim}': expected 'mujoco' or 'pybullet'")


class RobotworldEnv(gym.Env):
    """A table-top manipulation task on a 7-DoF arm with a parallel-jaw gripper.

    Observation (dict): ``proprio`` (22,), ``objects`` (N*7,), ``goal`` (3,), ``instruction``
    (text) and ``image_front`` / ``image_wrist`` (H, W, 3) uint8 when cameras are on.
    Action: (5,) in [-1, 1]: tool delta x, y, z, delta yaw, gripper (+1 open, -1 close);
    in joint mode (8,): seven joint deltas and the gripper.
    ``info``: ``is_success``, ``is_grasped``, ``collision``, and ``sim_unstable`` when the
    physics diverged (the episode then ends with a warning).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, cfg: TaskConfig, sim: str = "mujoco", render_mode: str | None = None):
        self.cfg, self.sim, self.render_mode = cfg, sim, render_mode
        self.physics = make_physics(cfg, sim)
        self.nobj = scene.num_objects(cfg)
        dt = 1.0 / cfg.control_hz
        self.controller = EEController(cfg.max_ee_step, cfg.max_yaw_step, cfg.max_joint_step,
                                       dt, cfg.action_mode)
        adim = 5 if cfg.action_mode == "ee" else 8
        self.action_space = spaces.Box(-1.0, 1.0, (adim,), np.float32)
        self._action_shape = (adim,)
        obs = {
            "proprio": spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32),
            "objects": spaces.Box(-np.inf, np.inf, (self.nobj * OBJECT_DIM,), np.float32),
            "goal": spaces.Box(-np.inf, np.inf, (3,), np.float32),
            "instruction": spaces.Text(INSTRUCTION_LEN, charset=_CHARSET),
        }
        h, w = cfg.image_size
        for cam in cfg.cameras:
            obs[f"image_{cam}"] = spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.episode: EpisodeSpec | None = None
        self._state: WorldState | None = None
        self._steps = 0
        self._sampler = tasks.SAMPLERS[cfg.task]

    # ---- gym API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episode = self._sampler(self.np_random, self.cfg)
        self.physics.reset(self.episode)
        self._state = self.physics.state()
        self._goal32 = self.episode.goal.astype(np.float32)
        self._steps = 0
        return self._obs(), self._info(False, False)

    def step(self, action):
        self.begin_step(action)
        self.physics.advance()
        return self.finish_step()

    # step() in two halves around the physics, for sims.vector.ThreadedVectorEnv
    def begin_step(self, action) -> None:
        """Check the action and command the controller's joint targets."""
        if self.episode is None:
            raise RuntimeError("call reset() before step()")
        a = self._check_action(action)
        s = self._state
        self.physics.begin(self.controller.command(a, s.q, s.tcp_pos, s.tcp_rot, self.physics.jacobian()))

    def finish_step(self):
        """Read the new state after the physics ran: step()'s return value."""
        reward, terminated, truncated, info = self.finish_state(stacklevel=4)
        return self._obs(), reward, terminated, truncated, info

    def finish_state(self, stacklevel: int = 3) -> tuple[float, bool, bool, dict[str, Any]]:
        """``finish_step`` without the observation: reward, terminated, truncated and info,
        with the new state read (a vector env casts its copies' observations together)."""
        stable = self.physics.finish()
        self._steps += 1
        truncated = self._steps >= self.cfg.episode_length
        if not stable:
            warnings.warn(f"{self.cfg.task}: simulation went unstable at step {self._steps}; "
                          "ending the episode", RuntimeWarning, stacklevel=stacklevel)
            self.physics.reset(self.episode)  # a finite state for the last observation
            self._state = self.physics.state()
            return 0.0, True, truncated, self._info(False, True)
        self._state = s = self.physics.state()
        ok = tasks.success(self.cfg.task, s, self.episode, self.cfg)
        if self.cfg.reward_type == "sparse":
            reward = float(ok)
        else:
            reward = 1.0 if ok else tasks.dense_reward(self.cfg.task, s, self.episode)
        terminated = ok and self.cfg.terminate_on_success
        return reward, terminated, truncated, self._info(ok, False)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        h, w = self.cfg.image_size
        return self.physics.render("front", h, w)

    def close(self):
        self.physics.close()

    # ---- helpers ---------------------------------------------------------------------------
    def _check_action(self, action) -> np.ndarray:
        """The action as a float array of the action's shape, or a ValueError naming the
        shape expected. The controller refuses NaN or infinite values and clips to [-1, 1]."""
        if type(action) is np.ndarray and action.dtype.kind == "f" and action.shape == self._action_shape:
            return action  # the hot path: a float array of the right shape
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self._action_shape:
            raise ValueError(f"action has shape {a.shape}; expected {self._action_shape} "
                             f"({'dx dy dz dyaw grip' if a.size == 5 else 'action_mode'}"
                             f" = {self.cfg.action_mode})")
        return a

    def _obs(self) -> dict[str, Any]:
        s = self._state
        if s.flat is not None:  # the engine gathered the state in observation order: one cast
            flat = s.flat.astype(np.float32)
            proprio, objects = flat[FLAT_PROPRIO], flat[FLAT_OBJECTS:]
        else:
            proprio = np.concatenate((s.q, s.dq, (s.finger,), s.tcp_pos, s.tcp_quat), dtype=np.float32)
            objects = np.concatenate((s.obj_pos, s.obj_quat), axis=1, dtype=np.float32).ravel()
        obs = {"proprio": proprio, "objects": objects, "goal": self._goal32.copy(),
               "instruction": self.episode.instruction}
        h, w = self.cfg.image_size
        for cam in self.cfg.cameras:
            obs[f"image_{cam}"] = self.physics.render(cam, h, w)
        return obs

    def _info(self, ok: bool, unstable: bool) -> dict[str, Any]:
        s = self._state
        info = {"is_success": ok, "is_grasped": s.grasped, "collision": s.collision}
        if unstable:
            info["sim_unstable"] = True
        return info

    # ---- privileged access for scripted experts ----------------------------------------------
    @property
    def world_state(self) -> WorldState:
        return self._state


def check_actions(actions, shape: tuple[int, ...]) -> np.ndarray:
    """Actions for many copies (copies, action size) as a float64 copy clipped to [-1, 1], as
    each copy's own step would take them; a ValueError naming the expected shape, or the
    copies whose actions hold NaN or infinite values."""
    a = np.array(actions, dtype=np.float64)  # a copy: clipped in place below
    if a.shape != shape:
        raise ValueError(f"actions have shape {a.shape}; expected {shape} (copies, action size)")
    if not math.isfinite(a.sum()) and not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1)).tolist()
        raise ValueError(f"actions for copies {bad} contain NaN or infinite values; expected "
                         "finite numbers in [-1, 1]")
    np.minimum(a, 1.0, out=a)
    return np.maximum(a, -1.0, out=a)


def begin_steps(envs: list[RobotworldEnv], actions, jac: np.ndarray) -> None:
    """``begin_step`` for many MuJoCo copies of one task at once, with the controller run once
    over the batch (``EEController.command_batch``): the same joint commands, bit for bit, as
    each copy's own ``begin_step``, at a fraction of the Python per copy.

    Args:
        envs: the copies (unwrapped, MuJoCo, one config).
        actions: (E, A) actions, one row per copy.
        jac: (E, 6, nv) array whose rows the copies' physics keep current: each writes the
            Jacobian of the state it leaves at reset and after each step
            (``MujocoPhysics.bind_jacobian``).
    """
    a = check_actions(actions, (len(envs), *envs[0].action_space.shape))
    if any(env.episode is None for env in envs):
        raise RuntimeError("call reset() before step()")
    flat = np.array([env._state.flat for env in envs])  # np.array: a third of np.stack's cost
    ctrl = envs[0].controller.command_batch(a, flat[:, FLAT_Q], flat[:, FLAT_TCP_POS],
                                            flat[:, FLAT_ROT].reshape(-1, 3, 3), jac[:, :, :7])
    for env, c in zip(envs, ctrl):
        env.physics.begin(c)


def stacked_obs(envs: list[RobotworldEnv]) -> dict[str, Any]:
    """The observations of many MuJoCo copies without cameras, stacked: each key as the copies'
    own ``_obs`` would give it, stacked, with one cast per key instead of one per copy."""
    flat = np.array([env._state.flat for env in envs], dtype=np.float32)  # one cast
    return {"proprio": flat[:, FLAT_PROPRIO], "objects": flat[:, FLAT_OBJECTS:],
            "goal": np.array([env._goal32 for env in envs]),
            "instruction": [env.episode.instruction for env in envs]}
