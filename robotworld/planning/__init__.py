"""Decide: sampling-based MPC (MPPI, CEM) over batched costs such as the world model's."""

from robotworld.planning.costs import CostWeights, WorldModelCost
from robotworld.planning.planner import Planner, PlannerConfig

__all__ = ["CostWeights", "Planner", "PlannerConfig", "WorldModelCost"]
