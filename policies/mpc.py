"""Planner-as-policy: MPPI / CEM over the world model's imagination (``--policy mpc``)."""

from __future__ import annotations

from typing import Any

import numpy as np


class MPCPolicy:
    """Plans an action sequence from each observation and executes its first step.

    Args:
        checkpoint: world-model checkpoint ('default': the shipped one).
        planner: PlannerConfig fields (horizon, samples, iterations, ...).
        weights: CostWeights fields (collision=0 turns collision avoidance off).
        device: auto, cpu or cuda.
        seed: seed of the planner's sampling noise.
    """

    def __init__(self, checkpoint: str = "default", planner: dict[str, Any] | None = None,
                 weights: dict[str, Any] | None = None, device: str = "auto", seed: int | None = None) -> None:
        from robotworld.model import load
        from robotworld.model.train import pick_device
        from robotworld.planning import CostWeights, PlannerConfig, WorldModelCost

        self.device = pick_device(device)
        self.model = load(checkpoint, self.device)
        self.cost = WorldModelCost(self.model, CostWeights(**(weights or {})))
        self.planner_cfg = PlannerConfig(**{"seed": seed or 0, **(planner or {})})
        self.planner = None
        self.task = None

    def reset(self, env) -> None:
        from robotworld.planning import Planner

        u = env.unwrapped
        if u.action_space.shape[0] != self.model.spec.action_dim:
            raise ValueError(f"task {u.cfg.task} has {u.action_space.shape[0]} action dimensions; the world model "
                             f"takes {self.model.spec.action_dim}")
        self.task = u.cfg.task
        if self.planner is None:
            self.planner = Planner(self.cost, u.action_space.low, u.action_space.high, self.planner_cfg, self.device)
        self.planner.reset()

    def act(self, obs) -> np.ndarray:
        self.cost.observe(obs, self.task)
        return self.planner.plan()[:1].cpu().numpy()
