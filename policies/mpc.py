"""Planner-as-policy: MPPI / CEM over the world model's imagination (``--policy mpc``)."""

from __future__ import annotations

from typing import Any

import numpy as np


def scene_obstacles(env) -> np.ndarray:
    """The obstacle boxes of env's current episode, (K, 6) centres and half extents: what a
    perception module would hand the planner on a real arm (the world model does not see them)."""
    episode = env.unwrapped.episode
    obstacles = [] if episode is None else episode.obstacles
    return np.array([[*o.pos, *o.half] for o in obstacles], dtype=np.float32).reshape(-1, 6)


class MPCPolicy:
    """Plans an action sequence from each observation and executes its first step.

    Args:
        checkpoint: world-model checkpoint ('default': the shipped one).
        planner: PlannerConfig fields (horizon, samples, iterations, ...), and ``preset``:
            the search sizes to start from (``PLANNER_PRESETS``: full, the default, or fast,
            which plans at control rate on two CPU cores); by default the gripper command is
            the switch, held open among the proposals and executed fully open or fully closed
            (switch_snap=false executes the mean's value; switch_dim=-1 turns both off).
        weights: CostWeights fields (collision=0 turns collision avoidance off).
        device: auto, cpu or cuda.
        seed: seed of the planner's sampling noise.
    """

    def __init__(self, checkpoint: str = "default", planner: dict[str, Any] | None = None,
                 weights: dict[str, Any] | None = None, device: str = "auto", seed: int | None = None) -> None:
        from robotworld.model import load
        from robotworld.model.train import pick_device
        from robotworld.model.priors import ADMIT_GRIP
        from robotworld.planning import CostWeights, WorldModelCost, planner_config

        self.device = pick_device(device)
        self.model = load(checkpoint, self.device)
        self.cost = WorldModelCost(self.model, CostWeights(**(weights or {})))
        # the gripper command (the last action dimension, +1 opens) is the planner's switch: each
        # iteration also scores the mean with the gripper held open, so that a closed, empty
        # gripper can be planned open again (lift: 30 of 40 with it, 26 of 40 without, same seeds);
        # and it is executed fully open or fully closed, on the side of the opening that the
        # world model reads as closing (pick_place_clutter at the fast preset: 76 of 100 against
        # 60 of 100 executing the mean's half-closed fingers; BENCHMARKS.md)
        fields = dict(planner or {})
        switch = {"switch_dim": self.model.spec.action_dim - 1, "switch_to": "high",
                  "switch_snap": fields.get("switch_dim", 0) >= 0, "switch_threshold": ADMIT_GRIP}
        self.planner_cfg = planner_config(fields.pop("preset", "full"), **{"seed": seed or 0, **switch, **fields})
        self.planner = self.batch_planner = None
        self.task = None

    def _check(self, env) -> Any:
        u = env.unwrapped
        if u.action_space.shape[0] != self.model.spec.action_dim:
            raise ValueError(f"task {u.cfg.task} has {u.action_space.shape[0]} action dimensions; the world model "
                             f"takes {self.model.spec.action_dim}")
        self.task = u.cfg.task
        return u

    def reset(self, env, seed: int | None = None) -> None:
        """Start an episode; given its seed, the sampling noise restarts from (the planner's
        seed, the episode's), so that an episode of an evaluation replays the same alone."""
        from robotworld.planning import Planner
        from robotworld.planning.costs import ActionScale

        u = self._check(env)
        self.cost.set_scene(scene_obstacles(u), ActionScale.of(u))
        if self.planner is None:
            self.planner = Planner(self.cost, u.action_space.low, u.action_space.high, self.planner_cfg, self.device)
        self.planner.reset(None if seed is None else
                           int(np.random.SeedSequence([self.planner_cfg.seed, seed]).generate_state(1)[0]))

    def act(self, obs) -> np.ndarray:
        self.cost.observe(obs, self.task)
        return self.planner.plan()[:1].cpu().numpy()

    # ---- many environments, one batched plan a step (robotworld eval --batch N) ----------------
    def reset_batch(self, env, envs: int) -> None:
        """Plan for ``envs`` environments of env's task at once; every one starts afresh."""
        from robotworld.planning import Planner
        from robotworld.planning.costs import ActionScale

        u = self._check(env)
        if self.batch_planner is None or self.batch_planner.envs != envs:
            self.batch_planner = Planner(self.cost, u.action_space.low, u.action_space.high, self.planner_cfg,
                                         self.device, envs=envs)
        self.batch_planner.reset()
        self.cost.set_scene(None, ActionScale.of(u))
        self._boxes = np.zeros((envs, u.cfg.num_obstacles, 6), dtype=np.float32)
        self._boxes[..., 3:] = 1e-3  # placeholders until each environment's episode starts
        self._boxes[..., :3] = 1e3

    def reset_env(self, e: int, env=None) -> None:
        """Environment e of the batch starts a new episode (env: that environment, whose
        obstacles the plan then keeps clear of)."""
        self.batch_planner.reset_env(e)
        if env is not None and self._boxes.shape[1]:
            self._boxes[e] = scene_obstacles(env)
            self.cost.set_scene(self._boxes)

    def act_batch(self, observations: list[dict]) -> np.ndarray:
        """The next action of each environment, from one plan over all of them. -> (E, A)"""
        from robotworld.planning.costs import stack_observations

        self.cost.observe(stack_observations(observations), self.task)
        return self.batch_planner.plan()[:, 0].cpu().numpy()
