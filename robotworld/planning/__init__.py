"""Decide: sampling-based MPC (MPPI, CEM) over batched costs such as the world model's."""

from robotworld.planning.costs import CostWeights, WorldModelCost
from robotworld.planning.planner import PLANNER_PRESETS, Planner, PlannerConfig, planner_config

__all__ = ["PLANNER_PRESETS", "CostWeights", "Planner", "PlannerConfig", "WorldModelCost", "planner_config"]
