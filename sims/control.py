"""The arm controller shared by both engines: damped-least-squares IK with a posture null space.

An end-effector delta (position, yaw) becomes a joint target that respects the joint position
limits and the per-step velocity limits of the robot description.
"""

from __future__ import annotations

import functools
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
_Q_LO_L, _Q_HI_L, _HOME_Q = _Q_LO.tolist(), _Q_HI.tolist(), robot.HOME_Q.tolist()


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


def wrist_yaw_step(yaw_step: float, q7: float, axis_z: float) -> float:
    """The part of a commanded tool yaw step (rad) that the wrist can turn.

    With the tool pointing down, the last joint turns the tool's yaw by ``axis_z`` (the world z
    component of its axis, near -1) per radian. A step that would carry that joint past its
    limit (less the clamp's margin) is cut to the room left: asked of the IK in full, the
    clamped wrist left the other joints chasing the yaw, and the tool hardly moved where it was
    sent (a planner holding the yaw command at the limit saw its tool stall for tens of steps).
    A tool not pointing down (|axis_z| < 0.5) is left alone.
    """
    if abs(axis_z) < 0.5:
        return yaw_step
    dq = yaw_step / axis_z
    lo, hi = _Q_LO_L[6] - q7, _Q_HI_L[6] - q7
    if dq > hi:
        dq = hi if hi > 0.0 else 0.0
    elif dq < lo:
        dq = lo if lo < 0.0 else 0.0
    return dq * axis_z


def ik_step(jac: np.ndarray, pose_err, q: np.ndarray, dt: float) -> list[float]:
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
        seven joint targets (floats) inside position limits, at most DQ_MAX * dt from q.
    """
    # This runs every control step on 6x7 matrices, where each numpy call costs more than
    # its arithmetic: numpy does the three matrix products and MuJoCo the solve; the
    # seven-element parts are Python scalars (the same operations in the same order).
    ql = q.tolist()
    posture = [_NULL_GAIN * (h - qi) for h, qi in zip(_HOME_Q, ql)]
    err = np.subtract(pose_err, jac @ posture)
    jjt = jac @ jac.T
    jjt += _DAMP_I6
    mujoco.mju_cholFactor(jjt, 0.0)  # symmetric positive definite: Cholesky, in place
    mujoco.mju_cholSolve(err, jjt, err)  # in place: err becomes x
    return _clamp(ql, [t + qi + p for t, qi, p in zip((err @ jac).tolist(), ql, posture)], dt)


def clamp_joint_target(q: np.ndarray, target, dt: float) -> list[float]:
    """Clamp a (7,) joint target to the velocity limits over dt and the position limits."""
    return _clamp(q.tolist(), np.asarray(target, dtype=np.float64).tolist(), dt)


def _clamp(q: list[float], target: list[float], dt: float) -> list[float]:
    out = []
    # comparisons, not min() / max() calls (a third of the cost): raised to lo, then lowered to
    # hi (hi wins should they cross), and a NaN target stays NaN, as np.maximum / np.minimum do
    for t, qi, s, lo_q, hi_q in zip(target, q, _joint_steps(dt), _Q_LO_L, _Q_HI_L):
        lo, hi = qi - s, qi + s
        if lo < lo_q:
            lo = lo_q
        if hi > hi_q:
            hi = hi_q
        if t < lo:
            t = lo
        out.append(hi if t > hi else t)
    return out


def ik_step_batch(jac: np.ndarray, pose_err: np.ndarray, q: np.ndarray, dt: float) -> np.ndarray:
    """``ik_step`` for E arms at once, with the same numbers bit for bit (tests check it).

    jac: (E, 6, 7); pose_err: (E, 6); q: (E, 7). Returns (E, 7) joint targets.
    The seven- and six-element parts are elementwise over the batch, in ik_step's order of
    operations; the matrix products go through the same BLAS routines per arm (numpy's
    stacked matmul calls gemv for a matrix times a vector and syrk for J J^T, as the single
    form does), and the solve is MuJoCo's, one arm at a time.
    """
    posture = _NULL_GAIN * (robot.HOME_Q - q)
    err = pose_err - (jac @ posture[:, :, None])[:, :, 0]
    jjt = jac @ jac.transpose(0, 2, 1)
    jjt += _DAMP_I6
    for m, e in zip(jjt, err):
        mujoco.mju_cholFactor(m, 0.0)
        mujoco.mju_cholSolve(e, m, e)
    target = (err[:, None, :] @ jac)[:, 0]
    target += q
    target += posture
    return clamp_joint_targets(q, target, dt)


def clamp_joint_targets(q: np.ndarray, target: np.ndarray, dt: float) -> np.ndarray:
    """``clamp_joint_target`` over a batch: q, target (E, 7); target is clamped in place."""
    step = robot.DQ_MAX * dt
    lo = q - step
    np.maximum(lo, _Q_LO, out=lo)
    hi = q + step
    np.minimum(hi, _Q_HI, out=hi)
    np.maximum(target, lo, out=target)  # a NaN target stays NaN, as in the scalar form
    return np.minimum(target, hi, out=target)


@functools.lru_cache(maxsize=8)
def _joint_steps(dt: float) -> tuple[float, ...]:
    """The most each joint may move in dt (rad): DQ_MAX * dt."""
    return tuple((robot.DQ_MAX * dt).tolist())


class EEController:
    """Turns [-1, 1] actions into joint and finger targets.

    In 'ee' mode an action is (dx, dy, dz, dyaw, grip); in 'joint' mode (dq1..dq7, grip).
    grip +1 opens the fingers fully and -1 closes them.
    """

    def __init__(self, max_ee_step: float, max_yaw_step: float, max_joint_step: float,
                 dt: float, mode: str = "ee") -> None:
        self.max_ee_step, self.max_yaw_step = max_ee_step, max_yaw_step
        self.max_joint_step, self.dt, self.mode = max_joint_step, dt, mode

    def command(self, action, q: np.ndarray, tcp_pos: np.ndarray, tcp_rot: np.ndarray,
                jac: np.ndarray) -> list[float]:
        """Nine actuator targets: seven joints, two fingers. action: a sequence of floats
        in [-1, 1] (the env's checked action)."""
        finger = 0.5 * (float(action[-1]) + 1.0) * robot.FINGER_MAX
        if self.mode == "joint":
            target = q + np.multiply(action[:7], self.max_joint_step)
            return clamp_joint_target(q, target, self.dt) + [finger, finger]
        # Deltas are relative to where the tool is now (not to an integrated target), so a
        # closed-loop policy never double-counts the servo's lag. Scalars, not numpy: this
        # runs every control step on three numbers.
        dx, dy, dz, dyaw, _ = action
        step = self.max_ee_step
        err = [min(max(p + d * step, lo), hi) - p
               for p, d, lo, hi in zip(tcp_pos.tolist(), (dx, dy, dz), _WS_LOW, _WS_HIGH)]
        yaw = tool_yaw(tcp_rot) + wrist_yaw_step(dyaw * self.max_yaw_step, float(q[6]), float(jac[5, 6]))
        err += down_orientation_error(tcp_rot, yaw)
        return ik_step(jac, err, q, self.dt) + [finger, finger]

    def command_batch(self, action: np.ndarray, q: np.ndarray, tcp_pos: np.ndarray,
                      tcp_rot: np.ndarray, jac: np.ndarray) -> np.ndarray:
        """``command`` for E arms at once, the same numbers bit for bit (tests check it).

        action: (E, A) float64 in [-1, 1]; q: (E, 7); tcp_pos: (E, 3); tcp_rot: (E, 3, 3);
        jac: (E, 6, 7). Returns (E, 9) actuator targets.
        """
        out = np.empty((len(action), 9))
        out[:, 7] = 0.5 * (action[:, -1] + 1.0) * robot.FINGER_MAX
        out[:, 8] = out[:, 7]
        if self.mode == "joint":
            out[:, :7] = clamp_joint_targets(q, q + action[:, :7] * self.max_joint_step, self.dt)
            return out
        err = np.empty((len(action), 6))
        np.subtract(np.minimum(np.maximum(tcp_pos + action[:, :3] * self.max_ee_step, WS_LOW), WS_HIGH),
                    tcp_pos, out=err[:, :3])
        # the angles one arm at a time through math (numpy's trigonometry may round otherwise)
        r = tcp_rot.reshape(-1, 9)
        yaw = [math.atan2(r10, r00) + wrist_yaw_step(d * self.max_yaw_step, q7, jz)
               for r10, r00, d, q7, jz in zip(r[:, 3].tolist(), r[:, 0].tolist(), action[:, 3].tolist(),
                                              q[:, 6].tolist(), jac[:, 5, 6].tolist())]
        c = np.array([math.cos(y) for y in yaw])
        s = np.array([math.sin(y) for y in yaw])
        r00, r01, r02, r10, r11, r12, r20, r21 = (r[:, k] for k in range(8))
        err[:, 3] = 0.5 * (-r12 - (s * r20 - c * r21))
        err[:, 4] = 0.5 * ((c * r20 + s * r21) + r02)
        err[:, 5] = 0.5 * ((s * r00 - c * r01) - (c * r10 + s * r11))
        out[:, :7] = ik_step_batch(jac, err, q, self.dt)
        return out
