"""Decide: the scoring service and sampling-based MPC (MPPI, CEM) over its batched cost."""

from robotworld.planning.costs import ActionScale, CostWeights, Scorer, Scores, WorldModelCost
from robotworld.planning.planner import PLANNER_PRESETS, Planner, PlannerConfig, planner_config

__all__ = ["PLANNER_PRESETS", "ActionScale", "CostWeights", "Planner", "PlannerConfig", "Scorer", "Scores",
           "WorldModelCost", "planner_config"]
