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
