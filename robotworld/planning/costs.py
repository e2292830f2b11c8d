"""Scoring imagined futures: the cost terms the planner minimises, and the scoring service.

``Scorer.score(obs, chunks, task, boxes)`` answers the question every policy asks: here is what
the robot sees and k candidate action chunks (k, H, A); what will happen with each? It returns
per chunk a total and per-step named terms. ``WorldModelCost`` is the same scoring bound to one
observed ``Situation``, as the planner's cost function of the action sequences alone.

Every term is named and weighted in ``CostWeights``; weight 0 turns it off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from robotworld.model.priors import DEFAULT as DEFAULT_PRIORS
from robotworld.model.priors import PLANNING, Priors, commanded_opening, gripper_admits
from robotworld.policy import ActionScale
from sims import robot
from sims.physics import FLAT_TCP_QUAT
from sims.tasks import GOAL_OF

if TYPE_CHECKING:
    from robotworld.model.world_model import Imagined, Start


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


def grasp_rule_charges(out: Imagined, x: torch.Tensor, start: Start, p: Priors = DEFAULT_PRIORS
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per step, how much imagined grasp the gripper rules deny (``CostWeights.empty_grasp`` and
    ``off_centre_grasp``): the imagined grasp probability times one minus
    ``priors.gripper_admits`` without its centring factor (a closed, empty gripper that was not
    opened and closed again), and times the part that only the centring factor takes away (a
    close with the tool off the object's centre). out: imagined outcomes, time-major; x: (H, S,
    A); start: the situation's start (its observed finger and tool). -> two (H, S)"""
    obj = out.object_pos[..., 0, :]
    offset = start.tool - start.objects[:, 0]
    plain = gripper_admits(start.finger, x[..., -1], out.tool_pos, obj, offset, replace(p, centring=False))
    centred = gripper_admits(start.finger, x[..., -1], out.tool_pos, obj, offset, replace(p, centring=True))
    return out.grasp * (1 - plain), out.grasp * (plain - centred).clamp_(min=0)


def push_charge(out: Imagined, x: torch.Tensor, finger: torch.Tensor, p: Priors = DEFAULT_PRIORS) -> torch.Tensor:
    """Per step, soft 0/1 that a gripper observed closed on nothing is kept commanded closed
    beside the imagined first object (``CostWeights.push``). out: imagined outcomes, time-major
    (H, S, ...); x: action sequences (H, S, A), the last action the gripper (+1 open); finger:
    the observed opening (1 or S,); p: the openings' thresholds. -> (H, S)"""
    soft = p.opening_softness
    empty = torch.sigmoid((p.hold_min_opening - finger.reshape(1, -1)) / soft)
    closed = torch.sigmoid((p.admit_opening - commanded_opening(x[..., -1].clamp(-1, 1))) / soft)
    d = out.tool_pos - out.object_pos[..., 0, :]
    near = torch.sigmoid((PUSH_XY - d[..., :2].norm(dim=-1)) / soft) * torch.sigmoid((PUSH_Z - d[..., 2]) / soft)
    return empty * closed * near


def tool_yaw_of(proprio: torch.Tensor) -> torch.Tensor:
    """Tool yaw (rad) from observed proprio (..., 22): the angle about world z of the x axis of
    the tool orientation quaternion (w, x, y, z) at ``sims.physics.FLAT_TCP_QUAT``."""
    w, x, y, z = proprio[..., FLAT_TCP_QUAT].unbind(-1)
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
    unchanged, 39 and 40 of 50; docs/experiments.md)."""
    collision: float = 3.0
    """Weight of the summed collision probability above ``collision_floor`` (a cost); 0 turns
    collision avoidance off. Weight 5 priced out a grasp near the table on lift, before the
    floor. With the Q value off, weights 1, 2 and 3 gave the same 26 of 50 successes on
    pick_place_clutter (256 x 8 x 4, seeds 0-49) at 15.1, 11.5 and 6.6 steps in contact per
    episode, and lift kept 40 of 50 at 3 (docs/experiments.md)."""
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
    empty_grasp: float = 0.0
    """Weight of imagined grasp by a gripper that could not have grasped (a cost): observed
    closed on nothing, and not opened and closed again in the plan (``grasp_rule_charges``).
    The decision-rule form of ``Priors.empty_gripper``, for imagination without that prior:
    the planner otherwise plans a closed, empty gripper beside the object that the model
    imagines holding it (lift 62 of 100 without the rule in either place)."""
    off_centre_grasp: float = 0.0
    """Weight of imagined grasp by a close with the tool off the object's centre (a cost;
    ``grasp_rule_charges``): the decision-rule form of ``Priors.centring``."""
    arm: float = 0.0
    """Weight of the whole arm's contact probability with the obstacle boxes (a cost): the
    learned collision predictor read on the joint path that the controller's IK gives for the
    imagined tool path (``robotworld.collision.arm``). The gripper-only ``obstacle`` term does
    not see a forearm or elbow swinging into a tall box. Charged above ``arm_floor``, rescaled
    to [0, 1]; needs an ``ArmCollision`` given to the cost (MPC builds one when the weight is
    set). Off by default, since it doubles a fast plan's time on two CPU cores; turn it on where
    obstacles stand tall enough for the forearm (``configs/eval_clutter_tall.yaml``:
    BENCHMARKS.md, "Closed loop")."""
    arm_floor: float = 0.25
    """Predicted arm contact probability that costs nothing (as ``collision_floor``)."""
    doubt: float = 0.0
    """Weight of the grasp ensemble's disagreement (a cost; ``Imagined.doubt``, the spread of
    the members' grasp probabilities, per step): distrust of imagination where the data never
    showed the model such a state, in place of a rule (PETS, MOPO). Needs a model trained with
    an ensemble (``ModelConfig.ensemble``); nothing to charge without one."""
    gamma: float = 0.95
    """Discount over the horizon."""

    def __post_init__(self) -> None:
        for name in ("collision_floor", "arm_floor"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} = {getattr(self, name)}: expected 0 <= {name} < 1")
        for name in ("obstacle_margin", "table_clearance"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} = {getattr(self, name)}: expected a positive distance in metres")


def stack_observations(observations: list[dict]) -> dict:
    """E observations of one task as one batch for ``situation``: proprio (E, 22), objects
    (E, 7n), goal (E, 3), and the E instructions when there are any."""
    batch = {k: np.stack([o[k] for o in observations]) for k in ("proprio", "objects", "goal")}
    if "instruction" in observations[0]:
        batch["instruction"] = [o["instruction"] for o in observations]
    return batch


class Situation(NamedTuple):
    """What scoring starts from: E observed environments of one task (``situation``)."""

    start: Start
    """The world model's start, E rows."""
    yaw: torch.Tensor
    """(E,) observed tool yaw (rad)."""
    boxes: torch.Tensor | None
    """Obstacles: (K, 6) shared, or (E, K, 6) one set per environment; None: none."""
    task: str
    scale: ActionScale
    joints: torch.Tensor | None = None
    """(E, 7) observed joint positions (for the whole-arm term)."""

    @property
    def envs(self) -> int:
        return self.start.batch


def obstacle_boxes(boxes, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Obstacles as the scorer takes them: (K, 6) or (E, K, 6) centres and positive half extents
    of axis-aligned boxes in metres; None or K = 0: none. Raises ValueError on anything else."""
    if boxes is None or np.size(boxes) == 0:
        return None
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    if b.dim() not in (2, 3) or b.shape[-1] != 6 or not torch.isfinite(b).all() or (b[..., 3:] <= 0).any():
        raise ValueError(f"obstacles of shape {tuple(b.shape)}: expected finite (K, 6) or (E, K, 6) "
                         "boxes, centre then positive half extents")
    return b.to(device)


def situation(model: Any, obs: dict, task: str, boxes=None, scale: ActionScale | None = None) -> Situation:
    """Encode one observation (or a batch of E, ``stack_observations``) with the scene the plan
    must keep clear of, as a perception module or the simulator gives it (``obstacle_boxes``)."""
    if task not in GOAL_OF:
        raise ValueError(f"task {task!r}: expected one of {', '.join(GOAL_OF)}")
    start = model.encode(obs, task=task)
    proprio = torch.as_tensor(np.asarray(obs["proprio"]), dtype=torch.float32, device=start.latent.device)
    b = obstacle_boxes(boxes, start.latent.device)
    if b is not None and b.dim() == 3 and b.shape[0] != start.batch:
        raise ValueError(f"obstacles for {b.shape[0]} environments, observations of {start.batch}")
    proprio = proprio.reshape(-1, proprio.shape[-1])
    return Situation(start, tool_yaw_of(proprio), b, task, scale or ActionScale(), proprio[:, :7])


def step_terms(model: Any, sit: Situation, x: torch.Tensor, w: CostWeights, priors: Priors | None = None,
               arm: Any = None) -> tuple[Imagined, dict[str, torch.Tensor]]:
    """Imagine S action sequences from the situation and charge every step, unweighted.

    Args:
        x: (H, S, A) time-major; with E environments, environment e's sequences in columns
            e * S / E .. (e + 1) * S / E - 1, each imagined from its own start.
        priors: the priors imagination applies; None: the model's own (``ModelConfig.priors``).
            The gripper terms read their thresholds from it (or from the defaults).
    Returns:
        The imagined outcomes (time-major, first object only) and per-step terms (H, S) by name:
        reward and success (gains), collision (probability above the floor, rescaled),
        progress (m still to go), obstacle, table, push and arm (charges); the last four only
        where they apply (boxes given, weight set, an object task with an observed finger, an
        ``ArmCollision`` given as ``arm``).
    """
    H, S, A = x.shape
    if A != model.spec.action_dim:
        raise ValueError(f"actions have {A} dimensions; the world model takes {model.spec.action_dim}")
    E = sit.envs
    if S % E:
        raise ValueError(f"{S} sequences do not split evenly over the {E} observed environments")
    start, yaw, boxes, joints = sit.start, sit.yaw, sit.boxes, sit.joints
    if boxes is not None and boxes.dim() == 3 and E == 1:
        boxes = boxes[0]
    if E > 1:  # each environment's start, once per sequence of its own
        start, yaw = start.repeat(S // E), yaw.repeat_interleave(S // E, 0)
        joints = None if joints is None else joints.repeat_interleave(S // E, 0)
        if boxes is not None and boxes.dim() == 3:  # (E, K, 6): each environment's own
            boxes = boxes.repeat_interleave(S // E, 0)
    out = model.imagine(start, x, objects="first", time_major=True, priors=priors)
    limits = priors or DEFAULT_PRIORS  # the openings and offsets the gripper terms read
    terms = {"reward": out.reward, "success": out.success,
             "collision": ((out.collision - w.collision_floor) / (1 - w.collision_floor)).clamp_(min=0)}
    if w.progress:
        terms["progress"] = to_go(out, start.goal, sit.task)
    if w.obstacle and boxes is not None:
        terms["obstacle"] = obstacle_charge(out.tool_pos, x, yaw, boxes, sit.scale, w.obstacle_margin)
    if w.table:
        terms["table"] = table_charge(start.tool[:, 2], out.tool_pos, x, sit.scale, w.table_clearance)
    if w.push and GOAL_OF[sit.task] == "object" and start.finger is not None:
        terms["push"] = push_charge(out, x, start.finger, limits)
    if (w.empty_grasp or w.off_centre_grasp) and GOAL_OF[sit.task] == "object" and start.finger is not None:
        terms["empty_grasp"], terms["off_centre_grasp"] = grasp_rule_charges(out, x, start, limits)
    if w.doubt and getattr(model.cfg, "ensemble", 0):
        terms["doubt"] = out.doubt
    if w.arm and arm is not None and boxes is not None and joints is not None:
        opening = (x[..., -1].clamp(-1, 1) + 1) * (robot.FINGER_MAX / 2)
        p = arm(joints, out.tool_pos, x[..., 3].clamp(-1, 1) * sit.scale.yaw_step, opening, boxes,
                sit.scale.control_dt)
        terms["arm"] = ((p - w.arm_floor) / (1 - w.arm_floor)).clamp_(min=0)
    return out, terms


CHARGES = ("progress", "obstacle", "table", "push", "arm", "empty_grasp", "off_centre_grasp", "doubt")
"""The per-step charges beyond collision, in the order ``total_cost`` adds them."""


def total_cost(model: Any, sit: Situation, out: Imagined, terms: dict[str, torch.Tensor], x: torch.Tensor,
               w: CostWeights) -> torch.Tensor:
    """One cost per sequence (S,), lower is better: the weighted collision and charges summed
    over the horizon, less the discounted reward and success (and the Q value after the
    horizon when ``w.value`` is set)."""
    H, S, _ = x.shape
    disc = (w.gamma ** torch.arange(H, device=x.device, dtype=torch.float32))[:, None]
    gain = w.reward * (terms["reward"] * disc).sum(0) + w.success * (terms["success"] * disc).sum(0)
    if w.value:
        temb = sit.start.task[:1].expand(S, -1)
        gain = gain + w.value * w.gamma ** H * model.q_values(out.last, x[-1], temb).mean(0)
    cost = w.collision * terms["collision"].sum(0) - gain
    for name in CHARGES:
        if name in terms:
            cost = cost + getattr(w, name) * terms[name].sum(0)
    return cost


def table_charge(start: torch.Tensor, tool: torch.Tensor, x: torch.Tensor, scale: ActionScale,
                 clearance: float) -> torch.Tensor:
    """Per step, how far below ``clearance`` the commanded target puts the fingertips, in units
    of it. start: the observed tool height (1 or S,); tool: imagined tool positions after each
    step (H, S, 3); x: (H, S, A). -> (H, S)"""
    z = torch.cat((start.expand(1, x.shape[1]), tool[:-1, :, 2]), 0)  # where each step starts
    tips = z + x[..., 2].clamp(-1, 1) * scale.ee_step - FINGERTIP_DROP - scale.table_top
    return ((clearance - tips) / clearance).clamp_(min=0)


def obstacle_charge(tool: torch.Tensor, x: torch.Tensor, yaw: torch.Tensor, boxes: torch.Tensor,
                    scale: ActionScale, margin: float) -> torch.Tensor:
    """Per step, how far the imagined gripper comes inside ``margin`` of an obstacle, in units
    of the margin. tool: (H, S, 3); x: the action sequences (H, S, A), whose yaw (the fourth
    action) turns the hand from the observed ``yaw`` (1 or S,) and whose last action opens it;
    boxes: (K, 6), or (S, K, 6) one set per sequence. -> (H, S)"""
    return ((margin - clearance(tool, x, yaw, boxes, scale)) / margin).clamp_(min=0)


def clearance(tool: torch.Tensor, x: torch.Tensor, yaw: torch.Tensor, boxes: torch.Tensor,
              scale: ActionScale) -> torch.Tensor:
    """Per step, the imagined gripper's distance (m) to the nearest obstacle box (negative
    inside), with the plan's yaw and opening. Shapes as ``obstacle_charge``. -> (H, S)"""
    turned = yaw + x[..., 3].cumsum(0) * scale.yaw_step
    opening = (x[..., -1] + 1) * (robot.FINGER_MAX / 2)  # the gripper action g opens each finger (g + 1) / 2
    return gripper_clearance(tool, turned, opening, boxes)


def to_go(out: Imagined, goal: torch.Tensor, task: str) -> torch.Tensor:
    """Imagined distance still to go after each step, in metres: tool to goal where the task
    brings the tool there (``sims.tasks.GOAL_OF``); else tool to object while not grasped plus
    object to goal. out: time-major; goal (1 or S, 3). (H, S)"""
    if GOAL_OF[task] == "tool":
        return (out.tool_pos - goal).norm(dim=-1)
    obj = out.object_pos[..., 0, :]
    approach = (out.tool_pos - obj).norm(dim=-1) * (1 - out.grasp)
    return approach + (obj - goal).norm(dim=-1)


class WorldModelCost:
    """The planner's cost: scores action sequences (H, S, A) from the situation last observed.

    ``observe`` takes one observation or a batch of E (``proprio`` (E, 22), ...); after a batch,
    a call scores (H, E * S, A), environment e's S sequences in columns e * S .. (e + 1) * S - 1
    (the layout of ``Planner(..., envs=E)``), each imagined from its own environment's state.
    The situation is the one piece of state, set explicitly by observe and set_scene.
    """

    def __init__(self, model: Any, weights: CostWeights | None = None, priors: Priors | None = PLANNING,
                 arm: Any = None) -> None:
        self.model, self.w, self.priors, self.arm = model, weights or CostWeights(), priors, arm
        self.situation: Situation | None = None
        self.boxes: torch.Tensor | None = None
        self.scale = ActionScale()

    def observe(self, obs: dict, task: str) -> Situation:
        """Encode the observation the next plan starts from (or a batch of E, one per environment)."""
        self.situation = situation(self.model, obs, task, None, self.scale)._replace(boxes=self.boxes)
        return self.situation

    def set_scene(self, boxes, scale: ActionScale | None = None) -> None:
        """What the plan must keep clear of (``obstacle_boxes``) and the environment's action
        scale, for the plans from the next observation on."""
        self.boxes = obstacle_boxes(boxes, self.model.obs_mean.device)
        self.scale = scale or self.scale
        if self.situation is not None:
            self.situation = self.situation._replace(boxes=self.boxes, scale=self.scale)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.situation is None:
            raise RuntimeError("call observe(obs, task) before planning")
        out, terms = step_terms(self.model, self.situation, x, self.w, self.priors, self.arm)
        return total_cost(self.model, self.situation, out, terms, x, self.w)


class Scores(NamedTuple):
    """What ``Scorer.score`` returns for k chunks of H steps, batch-first."""

    cost: torch.Tensor
    """(k,) the planner's cost of each chunk, lower is better."""
    terms: dict[str, torch.Tensor]
    """Per-step terms (k, H) by name, unweighted (``step_terms``), plus ``clearance``: the
    imagined gripper's distance (m) to the nearest obstacle (inf without obstacles)."""
    imagined: Imagined
    """The imagined outcomes, batch-first: success, grasp and collision probabilities (k, H),
    tool and first-object positions."""

    @property
    def best(self) -> int:
        """Index of the lowest-cost chunk."""
        return int(torch.argmin(self.cost))


class Scorer:
    """The scoring service: observation and candidate chunks in, per-chunk outcomes out.

    Args:
        model: a WorldModel.
        weights: how the terms add up to one cost (``CostWeights``).
        priors: the structural priors imagination applies (``robotworld.model.priors``; the
            planner's ``PLANNING`` by default); None: the model's own, those it was trained with.
        arm: an ``ArmCollision`` for the whole-arm term (``arm_collision(device)``), or None.
    """

    def __init__(self, model: Any, weights: CostWeights | None = None, priors: Priors | None = None,
                 arm: Any = None) -> None:
        self.model, self.w, self.priors, self.arm = model, weights or CostWeights(), priors, arm

    @torch.no_grad()
    def score(self, obs: dict, chunks, task: str, boxes=None, scale: ActionScale | None = None) -> Scores:
        """Score k candidate chunks from one observation.

        Args:
            obs: one observation (``proprio``, ``objects``, ``goal``, optionally ``instruction``).
            chunks: (k, H, A) actions in [-1, 1], numpy or torch, any H >= 1.
            task: the task name.
            boxes: the scene's obstacles, (K, 6) centres and half extents (None: none).
            scale: the environment's action scale (``ActionScale.of(env)``, or a Scene's).
        Returns:
            Scores, batch-first.
        """
        device = self.model.obs_mean.device
        c = torch.as_tensor(np.asarray(chunks) if not isinstance(chunks, torch.Tensor) else chunks,
                            dtype=torch.float32, device=device)
        A = self.model.spec.action_dim
        if c.dim() == 2:
            c = c[None]
        if c.dim() != 3 or c.shape[-1] != A or c.shape[0] < 1 or c.shape[1] < 1:
            raise ValueError(f"chunks of shape {tuple(c.shape)}: expected (k, H, {A})")
        if not torch.isfinite(c).all():
            raise ValueError("chunks hold NaN or infinite actions")
        sit = situation(self.model, obs, task, boxes, scale)
        if sit.envs != 1:
            raise ValueError("score() takes one observation; score each of a batch on its own")
        x = c.transpose(0, 1)  # (H, k, A)
        out, terms = step_terms(self.model, sit, x, self.w, self.priors, self.arm)
        cost = total_cost(self.model, sit, out, terms, x, self.w)
        b = sit.boxes[0] if sit.boxes is not None and sit.boxes.dim() == 3 else sit.boxes
        terms["clearance"] = (torch.full_like(out.reward, float("inf")) if b is None
                              else clearance(out.tool_pos, x, sit.yaw, b, sit.scale))
        imagined = out.swapped()
        return Scores(cost, {k: v.T for k, v in terms.items()}, imagined)


def arm_collision(device: torch.device | str = "cpu", checkpoint: str = "default") -> Any:
    """The whole-arm term's predictor: the shipped learned collision predictor (or another
    checkpoint) on the controller's IK path, ready for ``WorldModelCost`` and ``Scorer``."""
    from robotworld.collision.arm import ArmCollision
    from robotworld.collision.train import load

    return ArmCollision(load(checkpoint, device)).to(device)
