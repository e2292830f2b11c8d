"""Policies that any ``robotworld eval`` can run, chosen by name.

A policy has ``reset(env, seed=None)`` and ``act(obs) -> (H, A)`` action chunk (H may be 1).
Given the episode's seed, a policy that draws random numbers restarts them from (its own seed,
the episode's), so any episode of an evaluation replays the same when run alone.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np


class Policy(Protocol):
    def reset(self, env, seed: int | None = None) -> None: ...
    def act(self, obs) -> np.ndarray: ...


class ExpertPolicy:
    """The task's scripted expert (privileged state), optionally with action noise and gripper
    fumbles (see sims.experts)."""

    def __init__(self, noise: float = 0.0, seed: int | None = None, fumble: float = 0.0) -> None:
        self.noise, self.seed, self.fumble, self._expert = noise, seed, fumble, None

    def reset(self, env, seed: int | None = None) -> None:
        from sims.experts import make_expert

        if self._expert is None or self._expert.env is not env:
            self._expert = make_expert(env, self.noise, self.seed, self.fumble)
        self._expert.reset(seed)

    def act(self, obs) -> np.ndarray:
        return self._expert.act(obs)[None]


class RandomPolicy:
    """Uniform random actions from the env's action space, seeded."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.space = None

    def reset(self, env, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng([self.seed or 0, seed])
        self.space = env.action_space
        self._lo = env.action_space.low.astype(np.float64)
        self._span = (env.action_space.high - env.action_space.low).astype(np.float64)

    def act(self, obs) -> np.ndarray:
        u = self.rng.random(self._lo.shape[0])
        return (self._lo + self._span * u).astype(np.float32)[None]


class ZeroPolicy:
    """Does nothing: zero motion, gripper held open. Must score 0% on every task."""

    def reset(self, env, seed: int | None = None) -> None:
        self.a = np.zeros(env.action_space.shape, np.float32)
        self.a[-1] = 1.0

    def act(self, obs) -> np.ndarray:
        return self.a[None]


REGISTRY: dict[str, Callable[..., Policy]] = {
    "expert": lambda seed=None: ExpertPolicy(0.0, seed),
    "noisy-expert": lambda seed=None: ExpertPolicy(0.3, seed),
    "fumbling-expert": lambda seed=None: ExpertPolicy(0.3, seed, fumble=0.05),
    "random": lambda seed=None: RandomPolicy(seed),
    "zero": lambda seed=None: ZeroPolicy(),
    "mpc": lambda seed=None: _mpc(seed=seed),  # MPPI over the shipped world model (torch)
    # the same at the "fast" search sizes (128 x 8 x 3): control rate on two CPU cores
    "mpc-fast": lambda seed=None: _mpc(seed=seed, planner={"preset": "fast"}),
}


def _mpc(**kw):
    from policies.mpc import MPCPolicy

    return MPCPolicy(**kw)


def checkpoint_path(name: str) -> str | None:
    """The world-model checkpoint a policy name points at ('mpc:PATH' or a '.pt' path), else None."""
    name = name.split(",")[0]
    if name.startswith("mpc:"):
        return name[4:]
    return name if name.endswith(".pt") else None


def planner_options(name: str) -> tuple[dict, dict]:
    """PlannerConfig and CostWeights fields given after the checkpoint, as two dicts:
    'mpc:PATH,samples=256,horizon=8,collision=0'. ``preset=NAME`` (a key of
    ``PLANNER_PRESETS``) goes with the planner's fields; fields given beside it override it."""
    import dataclasses

    from robotworld.planning.costs import CostWeights
    from robotworld.planning.planner import PLANNER_PRESETS, PlannerConfig

    fields = {f.name: (f, k) for k, cls in enumerate((PlannerConfig, CostWeights)) for f in dataclasses.fields(cls)}
    out: tuple[dict, dict] = ({}, {})
    for item in name.split(",")[1:]:
        key, sep, value = item.partition("=")
        if sep and key == "preset":
            if value not in PLANNER_PRESETS:
                raise ValueError(f"policy option '{item}': expected a planner preset, one of "
                                 f"{', '.join(PLANNER_PRESETS)}")
            out[0]["preset"] = value
            continue
        if not sep or key not in fields:
            raise ValueError(f"policy option '{item}': expected FIELD=VALUE with FIELD preset or one of "
                             f"{', '.join(fields)}")
        field, which = fields[key]
        kind = type(field.default)
        try:
            out[which][key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        except ValueError:
            raise ValueError(f"policy option '{item}': {value!r} is not a {kind.__name__}") from None
    return out


def check_policy(name: str) -> None:
    """Raise ValueError naming what was expected if ``name`` is not a policy."""
    import os

    path = checkpoint_path(name)
    if name in REGISTRY or (path is not None and (path == "default" or os.path.isfile(path))):
        if path is not None:
            planner_options(name)
        return
    if path is not None:
        raise ValueError(f"policy checkpoint '{path}' does not exist")
    raise ValueError(f"unknown policy '{name}': expected one of {', '.join(REGISTRY)}, or a world-model "
                     "checkpoint (PATH.pt or mpc:PATH, optionally followed by planner settings, "
                     "e.g. mpc:default,samples=256,horizon=8) to plan with")


def make_policy(name: str, seed: int | None = None) -> Policy:
    """A policy by registry name, or MPC over a world-model checkpoint ('PATH.pt', 'mpc:PATH',
    either followed by planner settings and cost weights: 'mpc:PATH,samples=256,collision=0')."""
    check_policy(name)
    path = checkpoint_path(name)
    if name not in REGISTRY and path is not None:
        planner, weights = planner_options(name)
        return _mpc(checkpoint=path, seed=seed, planner=planner, weights=weights)
    return REGISTRY[name](seed=seed)
