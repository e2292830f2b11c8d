"""Planner-as-policy: MPPI / CEM over the world model's imagination (``--policy mpc``).

    from policies.mpc import MPCConfig, MPCPolicy, mpc_config
    policy = MPCPolicy(mpc_config("mpc:default,preset=fast,collision=0"))   # or MPCConfig(...)
    policy.reset(seed, Scene.of(env)); chunk = policy.act(obs)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from robotworld.model.priors import DEFAULT as DEFAULT_PRIORS
from robotworld.model.priors import PLANNING, Priors
from robotworld.planning.costs import CostWeights
from robotworld.planning.planner import PLANNER_PRESETS, PlannerConfig, planner_config
from robotworld.policy import Scene


def gripper_switch(action_dim: int, priors: Priors = DEFAULT_PRIORS) -> dict[str, Any]:
    """PlannerConfig fields that make the gripper command (the last action, +1 opens) the
    planner's switch: each iteration also scores the mean with the gripper held open, so that a
    closed, empty gripper can be planned open again (lift: 30 of 40 with it, 26 of 40 without);
    and it is executed fully open or fully closed, on the side of the opening that imagination
    reads as closing (clutter at the fast preset: 76 of 100 against 60 executing the mean's
    half-closed fingers; docs/experiments.md)."""
    return {"switch_dim": action_dim - 1, "switch_to": "high", "switch_snap": True,
            "switch_threshold": priors.admit_grip}


@dataclass
class MPCConfig:
    """MPC over a world model: what to plan with and how to score."""

    checkpoint: str = "default"
    """World-model checkpoint ('default': the shipped one)."""
    planner: PlannerConfig = field(default_factory=lambda: PlannerConfig(**gripper_switch(5)))
    """Search settings (``planner_config(preset, ...)``; the gripper as the switch)."""
    weights: CostWeights = field(default_factory=CostWeights)
    """How the imagined outcomes add up to one cost; weight 0 turns a term off."""
    priors: Priors = PLANNING
    """The structural priors imagination applies (``robotworld.model.priors.PLANNING``: every
    one but touch, which the data made unnecessary)."""
    device: str = "auto"
    """auto, cpu or cuda."""


_OPTION_CLASSES = (PlannerConfig, CostWeights, Priors)


def mpc_options(name: str) -> tuple[dict, dict, dict]:
    """PlannerConfig, CostWeights and Priors fields given after the checkpoint, as three dicts:
    'mpc:PATH,samples=256,horizon=8,collision=0,touch=false'. ``preset=NAME`` (a key of
    ``PLANNER_PRESETS``) goes with the planner's fields; fields given beside it override it;
    ``device=auto|cpu|cuda`` with the planner's too."""
    fields = {f.name: (f, k) for k, cls in enumerate(_OPTION_CLASSES) for f in dataclasses.fields(cls)}
    out: tuple[dict, dict, dict] = ({}, {}, {})
    for item in name.split(",")[1:]:
        key, sep, value = item.partition("=")
        if sep and key == "device":
            out[0]["device"] = value
            continue
        if sep and key == "preset":
            if value not in PLANNER_PRESETS:
                raise ValueError(f"policy option '{item}': expected a planner preset, one of "
                                 f"{', '.join(PLANNER_PRESETS)}")
            out[0]["preset"] = value
            continue
        if not sep or key not in fields:
            raise ValueError(f"policy option '{item}': expected FIELD=VALUE with FIELD preset, device or one of "
                             f"{', '.join(fields)}")
        f, which = fields[key]
        kind = type(f.default)
        try:
            if kind is bool:
                if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                    raise ValueError
                out[which][key] = value.lower() in ("1", "true", "yes")
            else:
                out[which][key] = kind(value)
        except ValueError:
            raise ValueError(f"policy option '{item}': {value!r} is not a {kind.__name__}") from None
    return out


def mpc_config(name: str = "mpc:default", seed: int | None = None, preset: str = "full",
               device: str = "auto") -> MPCConfig:
    """The MPCConfig a command-line name spells: 'mpc:CHECKPOINT[,FIELD=VALUE...]' (or
    'PATH.pt[,...]'), over the planner preset ``preset`` unless the name gives another. By
    default the gripper is the planner's switch (``gripper_switch``); switch_dim=-1 turns it off."""
    head = name.split(",")[0]
    checkpoint = head[4:] if head.startswith("mpc:") else head
    planner, weights, prior_fields = mpc_options(name)
    priors = replace(PLANNING, **prior_fields)  # switches given on the command line override PLANNING's
    switch = gripper_switch(5, priors)
    if planner.get("switch_dim", 0) < 0:
        switch["switch_snap"] = False
    fields = {"seed": seed or 0, **switch, **planner}
    device = fields.pop("device", device)
    return MPCConfig(checkpoint or "default", planner_config(fields.pop("preset", preset), **fields),
                     CostWeights(**weights), priors, device)


class MPCPolicy:
    """Plans an action sequence from each observation and executes its first step.

    Args:
        cfg: MPCConfig (``mpc_config`` parses the command line's spelling).
    """

    def __init__(self, cfg: MPCConfig | None = None) -> None:
        from robotworld.device import pick_device
        from robotworld.model import load
        from robotworld.planning import WorldModelCost

        self.cfg = cfg = cfg or MPCConfig()
        self.device = pick_device(cfg.device)
        self.model = load(cfg.checkpoint, self.device)
        if cfg.planner.switch_dim >= self.model.spec.action_dim:
            raise ValueError(f"switch_dim = {cfg.planner.switch_dim}: the world model has "
                             f"{self.model.spec.action_dim} action dimensions")
        arm = None
        if cfg.weights.arm:  # the whole-arm term: the learned predictor on the IK path
            from robotworld.planning.costs import arm_collision

            arm = arm_collision(self.device)
        self.cost = WorldModelCost(self.model, cfg.weights, cfg.priors, arm)
        self.planner_cfg = cfg.planner
        self.planner = self.batch_planner = None
        self.task = None

    def _check(self, scene: Scene | None) -> Scene:
        if scene is None:
            raise ValueError("MPC needs the episode's Scene (task, obstacles, action bounds): "
                             "reset(seed, Scene.of(env))")
        if scene.low.shape[0] != self.model.spec.action_dim:
            raise ValueError(f"task {scene.task} has {scene.low.shape[0]} action dimensions; the world model "
                             f"takes {self.model.spec.action_dim}")
        self.task = scene.task
        return scene

    def reset(self, seed: int | None = None, scene: Scene | None = None) -> None:
        """Start an episode; given its seed, the sampling noise restarts from (the planner's
        seed, the episode's), so that an episode of an evaluation replays the same alone."""
        from robotworld.planning import Planner

        scene = self._check(scene)
        self.cost.set_scene(scene.obstacles, scene.scale)
        if self.planner is None:
            self.planner = Planner(self.cost, scene.low, scene.high, self.planner_cfg, self.device)
        self.planner.reset(None if seed is None else
                           int(np.random.SeedSequence([self.planner_cfg.seed, seed]).generate_state(1)[0]))

    def act(self, obs, prior_chunks=None) -> np.ndarray:
        """The first action of the plan from obs, (1, A); prior_chunks (K, T, A): proposals to
        seed the search with (any length T)."""
        return self.plan(obs, prior_chunks)[:1]

    def plan(self, obs, prior_chunks=None) -> np.ndarray:
        """The whole plan from obs, (H, A): the search warm-started from the last one and seeded
        by prior_chunks (K, T, A)."""
        self.cost.observe(obs, self.task)
        return self.planner.plan(prior_chunks).cpu().numpy()

    # ---- many environments, one batched plan a step (robotworld eval --batch N) ----------------
    def reset_batch(self, scene: Scene, envs: int) -> None:
        """Plan for ``envs`` environments of the scene's task at once; every one starts afresh."""
        from robotworld.planning import Planner

        scene = self._check(scene)
        if self.batch_planner is None or self.batch_planner.envs != envs:
            self.batch_planner = Planner(self.cost, scene.low, scene.high, self.planner_cfg, self.device, envs=envs)
        self.batch_planner.reset()
        self.cost.set_scene(None, scene.scale)
        self._boxes = np.zeros((envs, len(scene.obstacles), 6), dtype=np.float32)
        self._boxes[..., 3:] = 1e-3  # placeholders until each environment's episode starts
        self._boxes[..., :3] = 1e3

    def reset_env(self, e: int, scene: Scene | None = None) -> None:
        """Environment e of the batch starts a new episode (scene: its episode, whose obstacles
        the plan then keeps clear of)."""
        self.batch_planner.reset_env(e)
        if scene is not None and self._boxes.shape[1]:
            self._boxes[e] = scene.obstacles
            self.cost.set_scene(self._boxes)

    def act_batch(self, observations: list[dict]) -> np.ndarray:
        """The next action of each environment, from one plan over all of them. -> (E, A)"""
        from robotworld.planning.costs import stack_observations

        self.cost.observe(stack_observations(observations), self.task)
        return self.batch_planner.plan()[:, 0].cpu().numpy()
