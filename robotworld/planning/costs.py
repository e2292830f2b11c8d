"""Costs for the planner from the world model's imagination."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from robotworld.model.world_model import Outcomes


@dataclass
class CostWeights:
    """How the imagined outcomes of a sequence are turned into one cost (lower is better)."""

    reward: float = 1.0
    """Weight of the discounted imagined reward (a gain)."""
    success: float = 1.0
    """Weight of the summed success probability (a gain)."""
    value: float = 1.0
    """Weight of the Q ensemble's value after the horizon (a gain)."""
    collision: float = 1.0
    """Weight of the summed collision probability above ``collision_floor`` (a cost); 0 turns
    collision avoidance off. Weight 5 priced out a grasp near the table on lift. On
    pick_place_clutter (100 episodes, 256 x 8 x 4) weight 1 with the floor gave 5.6x fewer
    steps in contact than weight 0, but 14 successes against 22 (BENCHMARKS.md)."""
    collision_floor: float = 0.25
    """Imagined collision probability that costs nothing: a step is charged for what exceeds it,
    rescaled to [0, 1]. The expert, which never touches anything, grasps with the tool 1.5-2.5
    cm up, where the model gives 0.08 on average (0.2 at most, 20 expert episodes); with the tool
    below 1 cm, where every step is a table contact, the tool-position term alone gives 0.97 or
    more, and a tool driven 2 cm into the table is imagined at about 0.9. 0 charges every
    probability in full (pick_place_clutter: 7 successes against 14 with the floor)."""
    progress: float = 1.0
    """Weight of the imagined distance still to go, in metres, summed over the horizon (a cost):
    tool to goal on reach; on the object tasks, tool to object (while not grasped) plus object
    to goal. The reward saturates about 30 cm from its target (1 - tanh(10 d)); this term still
    points the way from there."""
    gamma: float = 0.95
    """Discount over the horizon."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.collision_floor < 1.0:
            raise ValueError(f"collision_floor = {self.collision_floor}: expected 0 <= collision_floor < 1")


def stack_observations(observations: list[dict]) -> dict:
    """E observations of one task as one batch for ``WorldModelCost.observe``: proprio (E, 22),
    objects (E, 7n), goal (E, 3), and the E instructions when there are any."""
    batch = {k: np.stack([o[k] for o in observations]) for k in ("proprio", "objects", "goal")}
    if "instruction" in observations[0]:
        batch["instruction"] = [o["instruction"] for o in observations]
    return batch


class WorldModelCost:
    """Scores action sequences (H, S, A) by imagining them from the current observation.

    ``observe`` takes one observation or a batch of E (``proprio`` (E, 22), ...); after a batch,
    a call scores (H, E * S, A), environment e's S sequences in columns e * S .. (e + 1) * S - 1
    (the layout of ``Planner(..., envs=E)``), each imagined from its own environment's state.
    """

    def __init__(self, model: Any, weights: CostWeights | None = None) -> None:
        self.model, self.w = model, weights or CostWeights()
        self.z = self.context = self.anchor = self.tool = self.goal = None
        self.task = ""

    def observe(self, obs: dict, task: str) -> None:
        """Encode the observation the next plan starts from (or a batch of E, one per environment)."""
        self.z = self.model.encode(obs, task=task)
        self.task = task
        self.context, self.anchor = self.model.last_context, self.model.last_anchor
        self.tool, self.goal = self.model.last_tool, self.model.last_goal
        self.finger = self.model.last_finger

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.z is None:
            raise RuntimeError("call observe(obs, task) before planning")
        m, w = self.model, self.w
        H, S, A = x.shape
        if A != m.spec.action_dim:
            raise ValueError(f"actions have {A} dimensions; the world model takes {m.spec.action_dim}")
        E = self.z.shape[0]
        if S % E:
            raise ValueError(f"{S} sequences do not split evenly over the {E} observed environments")
        temb = self.context[0][:1]  # one task for every environment observed
        z, tool, anchor, goal, finger = self.z, self.tool, self.anchor, self.goal, self.finger
        if E > 1:  # each environment's start, once per sequence of its own
            z, tool, anchor, goal = (v.repeat_interleave(S // E, 0) for v in (z, tool, anchor, goal))
            finger = None if finger is None else finger.repeat_interleave(S // E, 0)
        out = m.imagine_outcomes(z, x, temb, tool, anchor, goal, finger)
        disc = (w.gamma ** torch.arange(H, device=x.device, dtype=torch.float32))[:, None]
        gain = w.reward * (out.reward * disc).sum(0) + w.success * (out.success * disc).sum(0)
        if w.value:
            gain = gain + w.value * w.gamma ** H * m.q_values(out.last, x[-1], temb.expand(S, -1)).mean(0)
        charged = ((out.collision - w.collision_floor) / (1 - w.collision_floor)).clamp_(min=0)  # floor 0: p
        cost = w.collision * charged.sum(0) - gain
        if w.progress:
            cost = cost + w.progress * self.to_go(out).sum(0)
        return cost

    def to_go(self, out: Outcomes) -> torch.Tensor:
        """Imagined distance still to go after each step, in metres. (H, S)"""
        if self.task == "reach":
            return (out.tool_pos - out.goal).norm(dim=-1)
        approach = (out.tool_pos - out.object_pos).norm(dim=-1) * (1 - out.grasp)
        return approach + (out.object_pos - out.goal).norm(dim=-1)
