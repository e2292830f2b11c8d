"""Wrappers for learners that take numeric observations only (stable-baselines3)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sims.env import INSTRUCTION_LEN


class NumericInstruction(gym.ObservationWrapper):
    """Replaces the text ``instruction`` by its bytes, zero-padded: a (128,) uint8 Box.

    stable-baselines3 accepts only numeric spaces; this keeps the instruction in the
    observation (a policy can embed it) instead of dropping it.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        obs = dict(env.observation_space.spaces)
        obs["instruction"] = spaces.Box(0, 255, (INSTRUCTION_LEN,), np.uint8)
        self.observation_space = spaces.Dict(obs)

    def observation(self, observation: dict) -> dict:
        out = dict(observation)
        code = np.zeros(INSTRUCTION_LEN, np.uint8)
        raw = observation["instruction"].encode("ascii")[:INSTRUCTION_LEN]
        code[:len(raw)] = np.frombuffer(raw, np.uint8)
        out["instruction"] = code
        return out


def for_sb3(env: gym.Env) -> gym.Env:
    """The env as stable-baselines3 expects it (numeric dict observations)."""
    return NumericInstruction(env)


class ActionLatency(gym.Wrapper):
    """Each action takes effect ``steps`` control steps after it is sent, as with a slow link to
    the arm: step t applies the action sent at t - steps, the first ``steps`` steps a hold (no
    motion, the gripper open, as the arm starts). The perturbation ``robotworld eval --perturb
    latency=K`` applies."""

    def __init__(self, env: gym.Env, steps: int) -> None:
        if steps < 0:
            raise ValueError(f"latency = {steps}: expected a whole number of control steps >= 0")
        super().__init__(env)
        self.steps = steps
        self._queue: list[np.ndarray] = []

    def reset(self, **kwargs):
        hold = np.zeros(self.env.action_space.shape, np.float32)
        hold[-1] = 1.0  # the gripper's open command
        self._queue = [hold] * self.steps
        return self.env.reset(**kwargs)

    def step(self, action):
        self._queue.append(np.asarray(action, np.float32))
        return self.env.step(self._queue.pop(0))
