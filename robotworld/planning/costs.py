"""Costs for the planner from the world model's imagination."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sims import robot

if TYPE_CHECKING:
    from robotworld.model.world_model import Outcomes


def gripper_spheres() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spheres that cover the gripper of ``sims.robot.PANDA``, in the tool frame.

    Returns centres (P, 3) as (across the hand, along the fingers' travel, height above the tool
    point), radii (P,), and per sphere the finger it rides on (+1, -1, or 0 for the hand): a
    finger's spheres move out along the travel by the finger's opening. The hand box and each
    finger box are covered by a row of spheres along their longest side, each sphere wide enough
    to hold the box's cross-section (so the cover reaches at most about 1.5 cm beyond a face;
    tests/test_planner.py checks it against MuJoCo's distance between the boxes themselves).
    """
    d = robot.PANDA
    hx, hy, hz = d.hand_half
    fx, fy, fz = d.finger_half
    centres, radii, side = [], [], []

    def row(n_half: float, cross: float, along_y: bool, at: tuple[float, float, float], sign: float) -> None:
        n = max(1, math.ceil(2 * n_half / cross))
        gap = 2 * n_half / n
        r = math.hypot(cross, gap / 2)
        for k in range(n):
            t = -n_half + gap * (k + 0.5)
            c = (at[0], at[1] + t, at[2]) if along_y else (at[0], at[1], at[2] + t)
            centres.append(c)
            radii.append(r)
            side.append(sign)

    # the hand box: half extents (hx, hy, hz), its underside 2 hz below the hand frame's origin,
    # which sits TCP_OFFSET above the tool point
    row(hy, math.hypot(hx, hz), True, (0.0, 0.0, robot.TCP_OFFSET - hz), 0.0)
    # the fingers: boxes (fx, fy, fz) centred fy beyond their joint, fz below finger_base_z
    for sign in (1.0, -1.0):
        row(fz, math.hypot(fx, fy), False, (0.0, sign * fy, robot.TCP_OFFSET - d.finger_base_z - fz), sign)
    return np.array(centres), np.array(radii), np.array(side)


def gripper_clearance(tool: torch.Tensor, yaw: torch.Tensor, opening: torch.Tensor,
                      boxes: torch.Tensor) -> torch.Tensor:
    """Distance (m) from the gripper to the nearest obstacle box, negative when they overlap.

    The gripper points straight down (the controller keeps it so), turned by ``yaw`` about the
    vertical, and is covered by ``gripper_spheres``; each sphere's distance to an axis-aligned
    box is the distance of its centre from the box less its radius (0 inside).

    Args:
        tool: (..., 3) tool-point positions.
        yaw: (...) tool yaw (rad), the angle of the tool's x axis about the world z axis.
        opening: (...) each finger's opening (m, 0 to ``sims.robot.FINGER_MAX``).
        boxes: (K, 6) or (..., K, 6) obstacle centres and half extents, broadcast against tool.
    Returns:
        (...) the least clearance over the gripper's spheres and the obstacles.
    """
    centres, radii, side = (v.to(tool) for v in _SPHERES)  # no copy when already on tool's device and dtype
    c, s = torch.cos(yaw)[..., None], torch.sin(yaw)[..., None]  # (..., 1)
    across = centres[:, 0]
    travel = centres[:, 1] + side * opening[..., None]  # (..., P)
    # tool frame pointing down: x = (c, s, 0), y (the travel) = (s, -c, 0), up = world z
    p = torch.stack((tool[..., :1] + across * c + travel * s, tool[..., 1:2] + across * s - travel * c,
                     tool[..., 2:] + centres[:, 2].expand_as(travel)), -1)  # (..., P, 3)
    b = boxes[..., None, :, :]  # (..., 1, K, 6)
    gap = ((p[..., :, None, :] - b[..., :3]).abs() - b[..., 3:]).clamp(min=0).norm(dim=-1)  # (..., P, K)
    return (gap - radii[:, None]).amin((-2, -1))


_SPHERES = tuple(torch.as_tensor(v, dtype=torch.float32) for v in gripper_spheres())
FINGERTIP_DROP = robot.PANDA.finger_base_z + 2 * robot.PANDA.finger_half[2] - robot.TCP_OFFSET
"""How far (m) the fingertips reach below the tool point, with the gripper pointing down."""


PUSH_XY, PUSH_Z = 0.035, 0.03
"""Where a closed gripper pushes the object: the tool point within PUSH_XY (m) across of the
object's centre (a 2 cm half-width plus a finger's thickness and a margin) and at most PUSH_Z
above it (the fingertips, 1 cm below the tool point, then reach below the top of a 4 cm
object)."""


def push_charge(out: Outcomes, x: torch.Tensor, finger: torch.Tensor) -> torch.Tensor:
    """Per step, soft 0/1 that a gripper observed closed on nothing is kept commanded closed
    beside the imagined first object (``CostWeights.push``). out: imagined outcomes (H, S, ...);
    x: action sequences (H, S, A), the last action the gripper (+1 open); finger: the observed
    opening (1 or S,). -> (H, S)"""
    from robotworld.model.world_model import ADMIT_OPENING, HOLD_MIN_OPENING, OPENING_SOFTNESS, commanded_opening

    soft = OPENING_SOFTNESS
    empty = torch.sigmoid((HOLD_MIN_OPENING - finger.reshape(1, -1)) / soft)
    closed = torch.sigmoid((ADMIT_OPENING - commanded_opening(x[..., -1].clamp(-1, 1))) / soft)
    d = out.tool_pos - out.object_pos
    near = torch.sigmoid((PUSH_XY - d[..., :2].norm(dim=-1)) / soft) * torch.sigmoid((PUSH_Z - d[..., 2]) / soft)
    return empty * closed * near


def tool_yaw_of(proprio: torch.Tensor) -> torch.Tensor:
    """Tool yaw (rad) from observed proprio (..., 22): the angle about world z of the x axis of
    the tool orientation quaternion (w, x, y, z) at ``world_model.TOOL_QUAT``."""
    from robotworld.model.world_model import TOOL_QUAT

    w, x, y, z = proprio[..., TOOL_QUAT].unbind(-1)
    return torch.atan2(2 * (x * y + w * z), 1 - 2 * (y * y + z * z))


@dataclass
class CostWeights:
    """How the imagined outcomes of a sequence are turned into one cost (lower is better)."""

    reward: float = 1.0
    """Weight of the discounted imagined reward (a gain)."""
    success: float = 1.0
    """Weight of the summed success probability (a gain)."""
    value: float = 0.0
    """Weight of the Q ensemble's value after the horizon (a gain); off by default. The Q
    ensemble is trained by TD on the data's own actions, and it reads the gripper command as a
    sign of progress: over 3,140 pick_place_clutter steps with nothing held, it rated the last
    action with the gripper closed above the same action open by 0.88 on average (in 84% of
    them). At weight 1 the planner closed the gripper on its way to the object and pushed it
    instead (pick_place_clutter, 256 x 8 x 4: 12 of 50 against 26 of 50 at weight 0; lift
    unchanged, 39 and 40 of 50; BENCHMARKS.md)."""
    collision: float = 3.0
    """Weight of the summed collision probability above ``collision_floor`` (a cost); 0 turns
    collision avoidance off. Weight 5 priced out a grasp near the table on lift, before the
    floor. With the Q value off, weights 1, 2 and 3 gave the same 26 of 50 successes on
    pick_place_clutter (256 x 8 x 4, seeds 0-49) at 15.1, 11.5 and 6.6 steps in contact per
    episode, and lift kept 40 of 50 at 3 (BENCHMARKS.md)."""
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
    obstacle: float = 1.0
    """Weight of the gripper's closeness to known obstacle boxes (``WorldModelCost.set_scene``;
    a cost): each imagined step is charged (margin - clearance) / margin where the gripper,
    placed at the imagined tool position with the plan's yaw and opening, comes within
    ``obstacle_margin`` of a box. The world model does not see obstacles, so this is what keeps
    the hand off them; 0 turns it off. Only the gripper is checked, not the arm's links."""
    obstacle_margin: float = 0.02
    """Clearance (m) below which an obstacle costs (the gripper's cover of spheres already
    reaches up to about 1.5 cm beyond its boxes)."""
    table: float = 1.0
    """Weight of commanding the fingertips into the table (a cost): each step whose commanded
    tool target (where the step starts, plus the action's z times the environment's step; the
    observed tool position for the first step, so that one is exact whatever the model
    imagines) puts the fingertips below ``table_clearance`` above the table top is charged by
    how far, in units of table_clearance. The model imagines a tool pressed against the table
    poorly: in traced clutter episodes it had the tool rise while the plan drove it down, and
    the fingers stayed on the table for 60-100 steps. 0 turns it off."""
    table_clearance: float = 0.005
    """Height (m) of the fingertips above the table top below which a commanded target costs.
    The expert grasps with the fingertips 0.5-1.5 cm up (the tool point 1.5-2.5 cm)."""
    push: float = 1.0
    """Weight of a closed, empty gripper kept beside the object (a cost): where the gripper was
    observed closed on nothing (opening below ``HOLD_MIN_OPENING``; it cannot grasp until a step
    opens it), each step that keeps it commanded closed (below ``ADMIT_OPENING``) with the
    imagined tool within ``PUSH_XY`` across and ``PUSH_Z`` above the imagined first object is
    charged (soft 0/1). That is pushing: after a grasp that missed, plans moved the closed
    fingers about beside a cylinder and tipped it over. Not charged on reach (no object)."""
    gamma: float = 0.95
    """Discount over the horizon."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.collision_floor < 1.0:
            raise ValueError(f"collision_floor = {self.collision_floor}: expected 0 <= collision_floor < 1")
        for name in ("obstacle_margin", "table_clearance"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} = {getattr(self, name)}: expected a positive distance in metres")


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
        self.boxes: torch.Tensor | None = None
        self.yaw_step, self.ee_step, self.table_top = 0.25, 0.03, 0.0

    def observe(self, obs: dict, task: str) -> None:
        """Encode the observation the next plan starts from (or a batch of E, one per environment)."""
        self.z = self.model.encode(obs, task=task)
        self.task = task
        self.context, self.anchor = self.model.last_context, self.model.last_anchor
        self.tool, self.goal = self.model.last_tool, self.model.last_goal
        self.finger = self.model.last_finger
        proprio = torch.as_tensor(np.asarray(obs["proprio"]), dtype=torch.float32, device=self.z.device)
        self.yaw = tool_yaw_of(proprio.reshape(-1, proprio.shape[-1]))  # (E,)

    def set_scene(self, boxes, yaw_step: float = 0.25, ee_step: float = 0.03, table_top: float = 0.0) -> None:
        """What the plan must keep clear of, as a perception module or the simulator's scene
        gives it, and the environment's action scale.

        Args:
            boxes: obstacles, (K, 6) centres and half extents of axis-aligned boxes in metres,
                or (E, K, 6), one set per environment of a batch observed together; None or
                K = 0: none.
            yaw_step: radians of tool yaw per unit of the yaw action (``max_yaw_step``), to
                turn the imagined hand as the plan does.
            ee_step: metres of tool motion per unit of a position action (``max_ee_step``),
                for the commanded targets the table term checks.
            table_top: height of the table top (m).
        """
        self.yaw_step, self.ee_step, self.table_top = float(yaw_step), float(ee_step), float(table_top)
        if boxes is None or np.size(boxes) == 0:
            self.boxes = None
            return
        b = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
        if b.dim() not in (2, 3) or b.shape[-1] != 6 or not torch.isfinite(b).all() or (b[..., 3:] <= 0).any():
            raise ValueError(f"obstacles of shape {tuple(b.shape)}: expected finite (K, 6) or (E, K, 6) "
                             "boxes, centre then positive half extents")
        self.boxes = b.to(self.model.obs_mean.device)

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
        z, tool, anchor, goal, finger, yaw = self.z, self.tool, self.anchor, self.goal, self.finger, self.yaw
        boxes = self.boxes if self.boxes is None or self.boxes.dim() == 2 or E > 1 else self.boxes[0]
        if E > 1:  # each environment's start, once per sequence of its own
            z, tool, anchor, goal, yaw = (v.repeat_interleave(S // E, 0) for v in (z, tool, anchor, goal, yaw))
            finger = None if finger is None else finger.repeat_interleave(S // E, 0)
            if boxes is not None and boxes.dim() == 3:  # (E, K, 6): each environment's own
                boxes = boxes.repeat_interleave(S // E, 0)
        out = m.imagine_outcomes(z, x, temb, tool, anchor, goal, finger)
        disc = (w.gamma ** torch.arange(H, device=x.device, dtype=torch.float32))[:, None]
        gain = w.reward * (out.reward * disc).sum(0) + w.success * (out.success * disc).sum(0)
        if w.value:
            gain = gain + w.value * w.gamma ** H * m.q_values(out.last, x[-1], temb.expand(S, -1)).mean(0)
        charged = ((out.collision - w.collision_floor) / (1 - w.collision_floor)).clamp_(min=0)  # floor 0: p
        cost = w.collision * charged.sum(0) - gain
        if w.progress:
            cost = cost + w.progress * self.to_go(out).sum(0)
        if w.obstacle and boxes is not None:
            cost = cost + w.obstacle * self.obstacle_charge(out.tool_pos, x, yaw, boxes).sum(0)
        if w.table:
            cost = cost + w.table * self.table_charge(tool[:, 2], out.tool_pos, x).sum(0)
        if w.push and self.task != "reach" and finger is not None:
            cost = cost + w.push * push_charge(out, x, finger).sum(0)
        return cost

    def table_charge(self, start: torch.Tensor, tool: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per step, how far below ``table_clearance`` the commanded target puts the fingertips,
        in units of it. start: the observed tool height (1 or S,); tool: imagined tool positions
        after each step (H, S, 3); x: (H, S, A). -> (H, S)"""
        z = torch.cat((start.expand(1, x.shape[1]), tool[:-1, :, 2]), 0)  # where each step starts
        tips = z + x[..., 2].clamp(-1, 1) * self.ee_step - FINGERTIP_DROP - self.table_top
        c = self.w.table_clearance
        return ((c - tips) / c).clamp_(min=0)

    def obstacle_charge(self, tool: torch.Tensor, x: torch.Tensor, yaw: torch.Tensor, boxes: torch.Tensor
                        ) -> torch.Tensor:
        """Per step, how far the imagined gripper comes inside the obstacle margin, in units of
        the margin. tool: (H, S, 3); x: the action sequences (H, S, A), whose yaw (the fourth
        action) turns the hand from the observed ``yaw`` (1 or S,) and whose last action opens
        it; boxes: (K, 6), or (S, K, 6) one set per sequence. -> (H, S)"""
        turned = yaw + x[..., 3].cumsum(0) * self.yaw_step
        opening = (x[..., -1] + 1) * (robot.FINGER_MAX / 2)  # the gripper action g opens each finger (g + 1) / 2
        clear = gripper_clearance(tool, turned, opening, boxes)
        return ((self.w.obstacle_margin - clear) / self.w.obstacle_margin).clamp_(min=0)

    def to_go(self, out: Outcomes) -> torch.Tensor:
        """Imagined distance still to go after each step, in metres. (H, S)"""
        if self.task == "reach":
            return (out.tool_pos - out.goal).norm(dim=-1)
        approach = (out.tool_pos - out.object_pos).norm(dim=-1) * (1 - out.grasp)
        return approach + (out.object_pos - out.goal).norm(dim=-1)
