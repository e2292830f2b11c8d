"""Policies that any ``robotworld eval`` can run, chosen by name.

A policy has ``reset(env)`` and ``act(obs) -> (H, A)`` action chunk (H may be 1).
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np


class Policy(Protocol):
    def reset(self, env) -> None: ...
    def act(self, obs) -> np.ndarray: ...


class ExpertPolicy:
    """The task's scripted expert (privileged state), optionally with action noise."""

    def __init__(self, noise: float = 0.0, seed: int | None = None) -> None:
        self.noise, self.seed, self._expert = noise, seed, None

    def reset(self, env) -> None:
        from sims.experts import make_expert

        if self._expert is None or self._expert.env is not env:
            self._expert = make_expert(env, self.noise, self.seed)
        self._expert.reset()

    def act(self, obs) -> np.ndarray:
        return self._expert.act(obs)[None]


class RandomPolicy:
    """Uniform random actions from the env's action space, seeded."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.space = None

    def reset(self, env) -> None:
        self.space = env.action_space
        self._lo = env.action_space.low.astype(np.float64)
        self._span = (env.action_space.high - env.action_space.low).astype(np.float64)

    def act(self, obs) -> np.ndarray:
        u = self.rng.random(self._lo.shape[0])
        return (self._lo + self._span * u).astype(np.float32)[None]


class ZeroPolicy:
    """Does nothing: zero motion, gripper held open. Must score 0% on every task."""

    def reset(self, env) -> None:
        self.a = np.zeros(env.action_space.shape, np.float32)
        self.a[-1] = 1.0

    def act(self, obs) -> np.ndarray:
        return self.a[None]


REGISTRY: dict[str, Callable[..., Policy]] = {
    "expert": lambda seed=None: ExpertPolicy(0.0, seed),
    "noisy-expert": lambda seed=None: ExpertPolicy(0.3, seed),
    "random": lambda seed=None: RandomPolicy(seed),
    "zero": lambda seed=None: ZeroPolicy(),
    "mpc": lambda seed=None: _mpc(seed=seed),  # MPPI over the shipped world model (torch)
}


def _mpc(**kw):
    from policies.mpc import MPCPolicy

    return MPCPolicy(**kw)


def checkpoint_path(name: str) -> str | None:
    """The world-model checkpoint a policy name points at ('mpc:PATH' or a '.pt' path), else None."""
    if name.startswith("mpc:"):
        return name[4:]
    return name if name.endswith(".pt") else None


def check_policy(name: str) -> None:
    """Raise ValueError naming what was expected if ``name`` is not a policy."""
    import os

    path = checkpoint_path(name)
    if name in REGISTRY or (path is not None and (path == "default" or os.path.isfile(path))):
        return
    if path is not None:
        raise ValueError(f"policy checkpoint '{path}' does not exist")
    raise ValueError(f"unknown policy '{name}': expected one of {', '.join(REGISTRY)}, or a world-model "
                     "checkpoint (PATH.pt or mpc:PATH) to plan with")


def make_policy(name: str, seed: int | None = None) -> Policy:
    """A policy by registry name, or MPC over a world-model checkpoint ('PATH.pt', 'mpc:PATH')."""
    check_policy(name)
    path = checkpoint_path(name)
    if name not in REGISTRY and path is not None:
        return _mpc(checkpoint=path, seed=seed)
    return REGISTRY[name](seed=seed)
