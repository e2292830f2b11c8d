"""The arm controller shared by both engines: damped-least-squares IK with a posture null space.

An end-effector delta (position, yaw) becomes a joint target that respects the joint position
limits and the per-step velocity limits of the robot description.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from sims import robot

# Cartesian workspace of the tool centre point (m). Below z=0 lies the table: a policy may
# drive the fingers into it, and that is reported as a collision, never prevented.
WS_LOW = np.array([0.2, -0.45, -0.02])
WS_HIGH = np.array([0.8, 0.45, 0.55])
_DAMPING2 = 0.02**2
_NULL_GAIN = 0.1
_DAMP_I6 = _DAMPING2 * np.eye(6)
_LIMIT_MARGIN = 0.02
_WS_LOW, _WS_HIGH = WS_LOW.tolist(), WS_HIGH.tolist()
_Q_LO = robot.Q_MIN + _LIMIT_MARGIN
_Q_HI = robot.Q_MAX - _LIMIT_MARGIN


def down_rotation(yaw: float) -> np.ndarray:
    """Tool frame pointing straight down, turned by yaw about the world z axis. (3, 3)"""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def tool_yaw(rot: np.ndarray) -> float:
    """Yaw of a tool frame about world z, from its x axis. rot: (3, 3)"""
    return math.atan2(rot[1, 0], rot[0, 0])


def orientation_error(rot: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) that turns rot towards target (small-angle form)."""
    m = target @ rot.T  # the rotation still to go, in the world frame
    return 0.5 * np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])


def down_orientation_error(rot: np.ndarray, yaw: float) -> list[float]:
    """orientation_error(rot, down_rotation(yaw)) written out in scalars.

    The controller runs every control step, where a handful of small numpy calls cost more
    than the arithmetic; tests/test_robot.py checks this against the matrix form.
    """
    r00, r01, r02, r10, r11, r12, r20, r21, _ = rot.ravel().tolist()
    c, s = math.cos(yaw), math.sin(yaw)
    return [0.5 * (-r12 - (s * r20 - c * r21)),
            0.5 * ((c * r20 + s * r21) + r02),
            0.5 * ((s * r00 - c * r01) - (c * r10 + s * r11))]


def ik_step(jac: np.ndarray, pose_err, q: np.ndarray, dt: float) -> np.ndarray:
    """Joint target one control step ahead.

    dq = J^T (J J^T + l^2 I)^-1 (e - J p) + p, where e is the pose error and p the posture
    pull towards HOME_Q: the task step plus the posture pull projected into the damped null
    space of J.

    Args:
        jac: (6, 7) translational then rotational Jacobian of the tool point.
        pose_err: (6,) position then rotation-vector error to remove in this step.
        q: (7,) current joint positions.
        dt: control period in seconds, for the velocity limits.
    Returns:
        (7,) joint target inside position limits, at most DQ_MAX * dt from q.
    """
    # This runs every control step on 6x7 matrices, where each numpy call costs more than
    # its arithmetic: the steps below are the fewest calls found for the formula above.
    posture = _NULL_GAIN * (robot.HOME_Q - q)
    err = np.array(pose_err, dtype=np.float64)
    err -= jac @ posture
    jjt = jac @ jac.T
    jjt += _DAMP_I6
    mujoco.mju_cholFactor(jjt, 0.0)  # symmetric positive definite: Cholesky, in place
    mujoco.mju_cholSolve(err, jjt, err)  # in place: err becomes x
    target = err @ jac
    target += q
    target += posture
    return clamp_joint_target(q, target, dt)


def clamp_joint_target(q: np.ndarray, target: np.ndarray, dt: float) -> np.ndarray:
    """Clamp a (7,) joint target to the velocity limits over dt and the position limits.

    target is clamped in place and returned.
    """
    step = robot.DQ_MAX * dt
    lo = q - step
    np.maximum(lo, _Q_LO, out=lo)
    hi = q + step
    np.minimum(hi, _Q_HI, out=hi)
    np.maximum(target, lo, out=target)
    return np.minimum(target, hi, out=target)


class EEController:
    """Turns [-1, 1] actions into joint and finger targets.

    In 'ee' mode an action is (dx, dy, dz, dyaw, grip); in 'joint' mode (dq1..dq7, grip).
    grip +1 opens the fingers fully and -1 closes them.
    """

    def __init__(self, max_ee_step: float, max_yaw_step: float, max_joint_step: float,
                 dt: float, mode: str = "ee") -> None:
        self.max_ee_step, self.max_yaw_step = max_ee_step, max_yaw_step
        self.max_joint_step, self.dt, self.mode = max_joint_step, dt, mode

    def command(self, action: np.ndarray, q: np.ndarray, tcp_pos: np.ndarray,
                tcp_rot: np.ndarray, jac: np.ndarray) -> np.ndarray:
        """(9,) actuator targets: seven joints, two fingers."""
        out = np.empty(9)
        out[7:] = 0.5 * (float(action[-1]) + 1.0) * robot.FINGER_MAX
        if self.mode == "joint":
            out[:7] = clamp_joint_target(q, q + action[:7] * self.max_joint_step, self.dt)
            return out
        # Deltas are relative to where the tool is now (not to an integrated target), so a
        # closed-loop policy never double-counts the servo's lag. Scalars, not numpy: this
        # runs every control step on three numbers.
        dx, dy, dz, dyaw, _ = action.tolist()
        step = self.max_ee_step
        err = [min(max(p + d * step, lo), hi) - p
               for p, d, lo, hi in zip(tcp_pos.tolist(), (dx, dy, dz), _WS_LOW, _WS_HIGH)]
        yaw = tool_yaw(tcp_rot) + dyaw * self.max_yaw_step
        err += down_orientation_error(tcp_rot, yaw)
        out[:7] = ik_step(jac, err, q, self.dt)
        return out
