"""The structural priors of imagination: every hand-written rule ``WorldModel.imagine`` applies.

They live here, in one typed config (``Priors``), each with a switch, so that a user can see
them and turn each off (``imagine(start, actions, priors=Priors(touch=False))``, or
``mpc:default,touch=false`` on the command line). The measured effect of each switch is in
BENCHMARKS.md ("Priors") and how each was found in docs/experiments.md.

All functions are time-major: steps along dim 0, H steps of B sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FINGER_MAX_OPENING = 0.08
"""Full opening of the gripper (m), 2 x ``sims.robot.FINGER_MAX`` (the model does not import the
simulator; a test checks they agree); grip action g commands (g + 1) / 2 of it."""


@dataclass(frozen=True)
class Priors:
    """What imagination assumes beyond what the network learned. Distances in metres."""

    touch: bool = True
    """An object moves only once the tool has come within ``touch_radius`` of where it started:
    without it, a plan closing the gripper 20 cm above a cube imagined the cube rising."""
    touch_radius: float = 0.08
    """Every object that moved more than 5 mm in 320 episodes had had the tool within 5.4 cm."""
    touch_softness: float = 0.005
    """Width of the sigmoid that makes the touch gate differentiable."""
    empty_gripper: bool = True
    """A gripper observed closed on nothing holds nothing until a step opens it and a later one
    closes it: without it, a plan kept a closed, empty gripper beside the object and imagined
    lifting it (lift, seed 1)."""
    centring: bool = True
    """That closing step grasps only with the tool centred on the object where the step starts
    and where it ends (within ``centred_xy`` across and ``centred_z`` in height): planner grasps
    that closed 2 cm off were imagined held at 0.9 and failed in physics. Needs empty_gripper."""
    lift: bool = True
    """Nothing rises more than ``lift_free`` or moves across more than ``carry_free`` unless
    held: the model otherwise imagined a cube pushed 13 cm onto the goal by fingers passing
    above it."""
    hold_min_opening: float = 0.018
    """Below this opening (half the narrowest object) a gripper holds nothing."""
    held_max_opening: float = 0.058
    """An observed opening between hold_min_opening and this may be a grasp already made."""
    admit_opening: float = 0.05
    """A step commanding less than this (the widest object, 4.8 cm, with a margin) closes."""
    opening_softness: float = 0.002
    """Width of the sigmoids on openings and offsets."""
    centred_xy: float = 0.015
    """How far across the tool may be from the object's centre at a closing step."""
    centred_z: float = 0.015
    """How far in height."""
    lift_free: float = 0.01
    """How far an object may rise unheld (tipping, bumps)."""
    carry_free: float = 0.005
    """How far an object may move across the table unheld (a nudge): at 2 cm the planner let go
    of objects short of the zone and imagined them drifting into it (76 of 100 against 94)."""

    def __post_init__(self) -> None:
        for name in ("touch_radius", "touch_softness", "opening_softness", "centred_xy", "centred_z"):
            if getattr(self, name) <= 0:
                raise ValueError(f"priors {name} = {getattr(self, name)}: expected a positive distance in metres")
        for name in ("lift_free", "carry_free"):
            if getattr(self, name) < 0:
                raise ValueError(f"priors {name} = {getattr(self, name)}: expected a distance >= 0 in metres")
        if not 0 < self.hold_min_opening < self.held_max_opening:
            raise ValueError(f"priors hold_min_opening = {self.hold_min_opening}, held_max_opening = "
                             f"{self.held_max_opening}: expected 0 < hold_min_opening < held_max_opening")

    @property
    def admit_grip(self) -> float:
        """The gripper action that commands ``admit_opening``: imagination reads a step commanded
        below it as closing, and MPC executes it as fully closed (``PlannerConfig.switch_snap``)."""
        return 2 * self.admit_opening / FINGER_MAX_OPENING - 1


DEFAULT = ALL = Priors()
"""Every switch on, the thresholds as measured."""
NONE = Priors(touch=False, empty_gripper=False, centring=False, lift=False)
"""No prior: what the network learned alone."""
PLANNING = Priors(touch=False)
"""What the planner and the scorer imagine with by default, and what the shipped model was
trained with (``ModelConfig.priors``): the rules the data has not yet taught. Without touch,
closed loop is unchanged, so the data made it unnecessary; without empty_gripper, centring or
lift, lift and clutter fall (BENCHMARKS.md, "Priors"), and a model trained without the two
gripper rules on the planner's own fumbles learned them for lift but not for clutter
(docs/experiments.md, 2026-12-07, fourth session)."""
ADMIT_GRIP = DEFAULT.admit_grip


def commanded_opening(grip: torch.Tensor) -> torch.Tensor:
    """The gripper opening (m, both fingers) that gripper actions ``grip`` in [-1, 1] command."""
    return (grip + 1) * (FINGER_MAX_OPENING / 2)


def touched(tool: torch.Tensor, start: torch.Tensor, p: Priors = DEFAULT) -> torch.Tensor:
    """Soft 0/1 that the tool has come within ``touch_radius`` of each object's start by each
    step. tool: (H, B, 3); start: (1 or B, N, 3). -> (H, B, N)"""
    d = (tool[:, :, None] - start[None]).norm(dim=-1)
    return torch.sigmoid((p.touch_radius - d) / p.touch_softness).cummax(0).values


def gripper_admits(finger: torch.Tensor, grip: torch.Tensor, tool: torch.Tensor, obj: torch.Tensor,
                   start: torch.Tensor, p: Priors = DEFAULT) -> torch.Tensor:
    """Soft 0/1, per step, that the gripper could hold the object (``Priors.empty_gripper`` and
    ``Priors.centring``): it started closed on something (observed opening between
    hold_min_opening and held_max_opening), or at some step so far it was commanded closed while
    open just before (the step before, or at the first step the observed opening, at least
    admit_opening), with the tool centred on the object where that step starts and ends.

    Args:
        finger: (1 or B,) observed opening (m).
        grip: (H, B) gripper actions.
        tool, obj: (H, B, 3) imagined tool and object positions.
        start: (1 or B, 3) the observed tool-minus-object offset.
    Returns:
        (H, B)
    """
    soft = p.opening_softness
    f = finger.reshape(1, -1)
    held = torch.sigmoid((f - p.hold_min_opening) / soft) * torch.sigmoid((p.held_max_opening - f) / soft)
    opening = commanded_opening(grip)
    opened = torch.sigmoid((opening - p.admit_opening) / soft)
    closing = torch.sigmoid((p.admit_opening - opening) / soft)
    was_open = torch.cat((torch.sigmoid((f - p.admit_opening) / soft).expand_as(opened[:1]), opened[:-1]), 0)
    new_grasp = was_open * closing
    if p.centring:
        here = _centred(tool - obj, p)
        before = torch.cat((_centred(start, p).reshape(1, -1).expand_as(here[:1]), here[:-1]), 0)
        new_grasp = new_grasp * before * here
    return torch.maximum(held, new_grasp.cummax(0).values)


def _centred(d: torch.Tensor, p: Priors) -> torch.Tensor:
    soft = p.opening_softness
    return torch.sigmoid((p.centred_xy - d[..., :2].norm(dim=-1)) / soft) * torch.sigmoid((p.centred_z - d[..., 2].abs()) / soft)


def lift_gate(obj: torch.Tensor, start: torch.Tensor, grasp: torch.Tensor, p: Priors = DEFAULT) -> torch.Tensor:
    """Object positions obj (..., 3) with any rise above start (..., 3) beyond ``lift_free``, and
    any move across beyond ``carry_free``, scaled by the grasp probability (...)."""
    rise = obj[..., 2] - start[..., 2]
    z = start[..., 2] + rise.clamp(max=p.lift_free) + (rise - p.lift_free).clamp(min=0) * grasp
    d = obj[..., :2] - start[..., :2]
    dist = d.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    allowed = dist.clamp(max=p.carry_free) + (dist - p.carry_free).clamp(min=0) * grasp[..., None]
    return torch.cat((start[..., :2] + d * (allowed / dist), z[..., None]), -1)


SWITCHES = ("touch", "empty_gripper", "centring", "lift")
"""The priors that can be turned off by name."""


def parse(text: str) -> Priors:
    """Priors from a command-line spelling: 'all', 'none', 'planning' (``PLANNING``), or 'all'
    less some, e.g. '-touch,-lift' (names from ``SWITCHES``)."""
    text = text.strip().lower()
    if text in ("", "all"):
        return DEFAULT
    if text == "none":
        return NONE
    if text == "planning":
        return PLANNING
    off = {}
    for item in text.split(","):
        name = item.strip().lstrip("-")
        if not item.strip().startswith("-") or name not in SWITCHES:
            raise ValueError(f"priors '{item.strip()}': expected all, none, planning, or -NAME[,-NAME...] with NAME one of "
                             f"{', '.join(SWITCHES)}")
        off[name] = False
    return Priors(**off)
