"""Policies that any ``robotworld eval`` can run, chosen by name (``make_policy``).

Each follows ``robotworld.policy.Policy``: ``reset(seed=None, scene=None)`` and
``act(obs) -> (H, A)`` action chunk (H may be 1); a ``Proposer`` also has ``sample(obs, k)``.
Given the episode's seed, a policy that draws random numbers restarts them from (its own seed,
the episode's), so any episode of an evaluation replays the same when run alone.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from robotworld.policy import Policy, Scene


def _need_scene(scene: Scene | None, who: str) -> Scene:
    if scene is None:
        raise ValueError(f"{who} needs the episode's Scene: reset(seed, scene=Scene.of(env))")
    return scene


class ExpertPolicy:
    """The task's scripted expert (privileged state), optionally with action noise and gripper
    fumbles (see sims.experts).

    After each ``act``, ``last_info["label"]`` (1, A) is the action the expert meant before its
    noise and fumbles: a clean teacher label at the state the noisy rollout reached (DART), which
    ``robotworld collect`` records as the ``label`` field for behaviour cloning.
    """

    def __init__(self, noise: float = 0.0, seed: int | None = None, fumble: float = 0.0) -> None:
        self.noise, self.seed, self.fumble, self._expert = noise, seed, fumble, None
        self.last_info: dict = {}

    def reset(self, seed: int | None = None, scene: Scene | None = None) -> None:
        from sims.experts import make_expert

        env = _need_scene(scene, "the scripted expert").env
        if env is None:
            raise ValueError("the scripted expert reads the simulator's state: it needs Scene.env")
        if self._expert is None or self._expert.env is not env:
            self._expert = make_expert(env, self.noise, self.seed, self.fumble)
        self._expert.reset(seed)

    def act(self, obs) -> np.ndarray:
        a = self._expert.act(obs)[None]
        self.last_info = {"label": self._expert.label[None]}
        return a


class RandomPolicy:
    """Uniform random actions from the env's action space, seeded."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None, scene: Scene | None = None) -> None:
        scene = _need_scene(scene, "the random policy")
        if seed is not None:
            self.rng = np.random.default_rng([self.seed or 0, seed])
        self._lo = scene.low.astype(np.float64)
        self._span = (scene.high - scene.low).astype(np.float64)

    def act(self, obs) -> np.ndarray:
        u = self.rng.random(self._lo.shape[0])
        return (self._lo + self._span * u).astype(np.float32)[None]


class ZeroPolicy:
    """Does nothing: zero motion, gripper held open. Must score 0% on every task."""

    def reset(self, seed: int | None = None, scene: Scene | None = None) -> None:
        self.a = np.zeros(_need_scene(scene, "the zero policy").low.shape, np.float32)
        self.a[-1] = 1.0

    def act(self, obs) -> np.ndarray:
        return self.a[None]


REGISTRY: dict[str, Callable[..., Policy]] = {
    "expert": lambda seed=None, device="auto": ExpertPolicy(0.0, seed),
    "noisy-expert": lambda seed=None, device="auto": ExpertPolicy(0.3, seed),
    "fumbling-expert": lambda seed=None, device="auto": ExpertPolicy(0.3, seed, fumble=0.05),
    "random": lambda seed=None, device="auto": RandomPolicy(seed),
    "zero": lambda seed=None, device="auto": ZeroPolicy(),
}
MPC_NAMES = {"mpc": "full", "mpc-fast": "fast"}
"""MPPI over the shipped world model at a planner preset: full (1,024 x 16 x 6) or fast
(128 x 8 x 3, control rate on two CPU cores); either may be followed by options
('mpc-fast,collision=0,touch=false')."""


def _mpc_spelling(name: str) -> tuple[str, str] | None:
    """(the 'mpc:CHECKPOINT,...' spelling, preset) of an MPC policy name, else None."""
    head, _, rest = name.partition(",")
    if head in MPC_NAMES:
        return "mpc:default" + ("," + rest if rest else ""), MPC_NAMES[head]
    if head.startswith("mpc:") or head.endswith(".pt"):
        return name, "full"
    return None


def checkpoint_path(name: str) -> str | None:
    """The world-model checkpoint a policy name plans with ('mpc:PATH', a '.pt' path, or
    'default' for mpc and mpc-fast), else None."""
    spelled = _mpc_spelling(name)
    if spelled is None:
        return None
    head = spelled[0].split(",")[0]
    return head[4:] if head.startswith("mpc:") else head


VLA_NAMES = ("vla", "vla+imagine")
"""The VLA alone, and the VLA that imagines before it acts ('vla[:CHECKPOINT][,execute=4]',
'vla+imagine[:CHECKPOINT][,candidates=16,state=estimated,...]'; policies.vla)."""


def _vla_kind(name: str) -> str | None:
    kind = name.split(",")[0].split(":")[0]
    return kind if kind in VLA_NAMES else None


def check_policy(name: str) -> None:
    """Raise ValueError naming what was expected if ``name`` is not a policy."""
    import os

    if name in REGISTRY:
        return
    if _vla_kind(name):
        from policies.vla import vla_config

        cfg = vla_config(name)
        for what, path in (("VLA", getattr(cfg, "checkpoint", getattr(cfg, "vla", "default"))),
                           ("world-model", getattr(cfg, "world_model", "default"))):
            if path != "default" and not os.path.isfile(path):
                raise ValueError(f"{what} checkpoint '{path}' does not exist")
        return
    path = checkpoint_path(name)
    if path is not None and (path == "default" or os.path.isfile(path)):
        from policies.mpc import mpc_config

        mpc_config(*_mpc_spelling(name)[:1])  # the options parse
        return
    if path is not None:
        raise ValueError(f"policy checkpoint '{path}' does not exist")
    raise ValueError(f"unknown policy '{name}': expected one of {', '.join([*REGISTRY, *MPC_NAMES, *VLA_NAMES])}, or a "
                     "world-model checkpoint (PATH.pt or mpc:PATH) to plan with; an MPC policy may be followed by "
                     "planner settings, cost weights and priors, e.g. mpc:default,samples=256,horizon=8 or "
                     "mpc-fast,collision=0")


def make_policy(name: str, seed: int | None = None, device: str = "auto") -> Policy:
    """A policy by registry name, or MPC over a world-model checkpoint ('mpc', 'mpc-fast',
    'PATH.pt', 'mpc:PATH', any followed by planner settings, cost weights and priors:
    'mpc:PATH,samples=256,collision=0,touch=false'). device: where a model runs."""
    check_policy(name)
    if name in REGISTRY:
        return REGISTRY[name](seed=seed, device=device)
    if _vla_kind(name):
        from policies.vla import make

        return make(name, seed, device)
    from policies.mpc import MPCPolicy, mpc_config

    spelling, preset = _mpc_spelling(name)
    return MPCPolicy(mpc_config(spelling, seed=seed, preset=preset, device=device))


def factory(name: str, device: str = "auto") -> Callable[..., Policy]:
    """A picklable ``make(seed=...)`` for ``robotworld.data.collect``: the named policy, checked now."""
    import functools

    check_policy(name)
    return functools.partial(make_policy, name, device=device)
