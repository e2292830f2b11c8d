"""The arm along imagined futures: joint configurations from imagined tool paths, and the
learned whole-arm collision predictor on them, batched over every sequence a plan scores.

The world model imagines where the tool goes, not where the elbow goes. ``ArmPath`` runs the
controller's own inverse kinematics (``sims.control``: damped least squares with a posture null
space, clamped to the joint position limits and to the velocity limits over a control step) in
torch, step after step from the observed joints towards each imagined tool position and yaw.
``ArmCollision`` reads the learned predictor's world-collision probability (table and obstacle
boxes, every link and the gripper) off those configurations: the planner's ``arm`` cost term.
The exact MuJoCo checker (``robotworld.collision.exact``) is the reference it is measured
against (``robotworld bench arm``).
"""

from __future__ import annotations

import torch
from torch import nn

from robotworld.collision.learned import ARM_BODIES, CollisionPredictor, Kinematics
from sims import control, robot

_HAND = ARM_BODIES.index("hand")


class ArmPath(nn.Module):
    """The controller's IK step in torch, for B arms at once.

    The velocity limits hold over one control period, ``dt`` seconds (``1 / control_hz``),
    given to ``step`` and ``path``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.kin = Kinematics()
        f32 = torch.float32
        self.register_buffer("q_lo", torch.as_tensor(control._Q_LO, dtype=f32))
        self.register_buffer("q_hi", torch.as_tensor(control._Q_HI, dtype=f32))
        self.register_buffer("dq_max", torch.as_tensor(robot.DQ_MAX, dtype=f32))
        self.register_buffer("home", torch.as_tensor(robot.HOME_Q, dtype=f32))
        self.register_buffer("ws_lo", torch.as_tensor(control.WS_LOW, dtype=f32))
        self.register_buffer("ws_hi", torch.as_tensor(control.WS_HIGH, dtype=f32))
        self.register_buffer("damping", control._DAMPING2 * torch.eye(6))

    def tool(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tool point (B, 3), tool rotation (B, 3, 3) and its Jacobian (B, 6, 7) at joints q (B, 7)."""
        rots, poss = self.kin.frames(q, q.new_zeros(len(q)))
        rot = rots[:, _HAND]
        tcp = poss[:, _HAND] + rot[..., 2] * robot.TCP_OFFSET
        axes, origins = rots[:, :7, :, 2], poss[:, :7]  # each joint turns about its body's z axis
        jac = torch.cat((torch.linalg.cross(axes, tcp[:, None] - origins, dim=-1), axes), -1).transpose(1, 2)
        return tcp, rot, jac

    def step(self, q: torch.Tensor, target: torch.Tensor, yaw: torch.Tensor, dt: float = 0.05,
             at: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One control step of the controller's IK: joints q (B, 7) towards the tool at target
        (B, 3) pointing down at yaw (B,); at: ``tool(q)`` when already computed. -> (B, 7)
        joint targets inside the limits."""
        tcp, rot, jac = self.tool(q) if at is None else at
        pos_err = torch.minimum(torch.maximum(target, self.ws_lo), self.ws_hi) - tcp
        err = torch.cat((pos_err, down_orientation_error(rot, yaw)), -1)  # (B, 6)
        posture = control._NULL_GAIN * (self.home - q)
        err = err - (jac @ posture[..., None])[..., 0]
        a = jac @ jac.transpose(1, 2) + self.damping
        # symmetric positive definite: Cholesky, as the controller solves it (torch.linalg.solve
        # took 50x as long on a batch of 128 6 x 6 systems on two CPU cores)
        x = torch.cholesky_solve(err[..., None], torch.linalg.cholesky(a))
        out = (jac.transpose(1, 2) @ x)[..., 0] + q + posture
        lo = torch.maximum(q - self.dq_max * dt, self.q_lo)
        hi = torch.minimum(q + self.dq_max * dt, self.q_hi)
        return torch.minimum(torch.maximum(out, lo), hi)

    def path(self, q0: torch.Tensor, tool: torch.Tensor, yaw_steps: torch.Tensor, dt: float = 0.05) -> torch.Tensor:
        """Joint configurations after each step. q0: (1 or S, 7) observed joints; tool: (H, S, 3)
        imagined tool positions after each step; yaw_steps: (H, S) commanded yaw change per step
        (rad); dt: the control period (s). -> (H, S, 7)"""
        H, S, _ = tool.shape
        q = q0.expand(S, 7)
        out = []
        for t in range(H):
            at = self.tool(q)
            rot = at[1]
            yaw = torch.atan2(rot[:, 1, 0], rot[:, 0, 0]) + yaw_steps[t]
            q = self.step(q, tool[t], yaw, dt, at)
            out.append(q)
        return torch.stack(out)


def down_orientation_error(rot: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """``sims.control.down_orientation_error`` batched: the rotation vector (B, 3) that turns
    rot (B, 3, 3) towards the tool pointing straight down at yaw (B,)."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    r = rot
    return 0.5 * torch.stack((-r[:, 1, 2] - (s * r[:, 2, 0] - c * r[:, 2, 1]),
                              (c * r[:, 2, 0] + s * r[:, 2, 1]) + r[:, 0, 2],
                              (s * r[:, 0, 0] - c * r[:, 0, 1]) - (c * r[:, 1, 0] + s * r[:, 1, 1])), -1)


class ArmCollision(nn.Module):
    """Whole-arm collision probability along imagined sequences: ``ArmPath`` then the learned
    predictor's world head (table and obstacle boxes).

    Args:
        predictor: a trained CollisionPredictor (``robotworld.collision.train.load``).
        table: also read the table head. Off by default: the world model's collision head
            and the table term already cover the fingertips on the table, and the predictor's
            table head rates a grasp height (fingertips 0.5-1.5 cm up) as a likely contact.
    """

    def __init__(self, predictor: CollisionPredictor, table: bool = False) -> None:
        super().__init__()
        self.predictor, self.arm, self.table = predictor, ArmPath(), table

    @torch.no_grad()
    def forward(self, q0: torch.Tensor, tool: torch.Tensor, yaw_steps: torch.Tensor, opening: torch.Tensor,
                boxes: torch.Tensor | None, dt: float = 0.05) -> torch.Tensor:
        """Per step, the probability that the arm or gripper touches the table or an obstacle.

        Args:
            q0: (1 or S, 7) observed joints.
            tool: (H, S, 3) imagined tool positions.
            yaw_steps: (H, S) commanded yaw change per step (rad).
            opening: (H, S) each finger's commanded opening (m).
            boxes: (K, 6), or (S, K, 6) one set per sequence; None: the table alone.
            dt: the control period (s).
        Returns:
            (H, S) probabilities.
        """
        H, S, _ = tool.shape
        q = self.arm.path(q0, tool, yaw_steps, dt).reshape(H * S, 7)
        if boxes is not None and boxes.dim() == 3:  # one set per sequence, the same at every step
            boxes = boxes[None].expand(H, -1, -1, -1).reshape(H * S, *boxes.shape[1:])
        world = self.predictor.world_logits(q, boxes, opening.reshape(H * S), table=self.table)
        return torch.sigmoid(world).view(H, S)

    def joints(self, q0: torch.Tensor, tool: torch.Tensor, yaw_steps: torch.Tensor, dt: float = 0.05) -> torch.Tensor:
        """The configurations the probabilities are read at, (H, S, 7) (``ArmPath.path``)."""
        return self.arm.path(q0, tool, yaw_steps, dt)
