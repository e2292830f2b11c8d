"""The arm controller shared by both engines: damped-least-squares IK with a posture null space.

An end-effector delta (position, yaw) becomes a joint target that respects the joint position
limits and the per-step velocity limits of the robot description.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from sims import robot

# Cartesian workspace of the tool centre point (m). Below z=0 lies the table: a policy may
# drive the fingers into it, and that is reported as a collision, never prevented.
WS_LOW = np.array([0.2, -0.45, -0.02])
WS_HIGH = np.array([0.8, 0.45, 0.55])
_DAMPING2 = 0.02**2
_NULL_GAIN = 0.1
_LIMIT_MARGIN = 0.02
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


# The controller runs every control step on a handful of numbers, between two runs of the
# physics that push Python's own code and data out of the CPU caches: written as Python and numpy
# calls it took about 40 us a step hot and 50-60 us in the env's loop on two CPU cores, a tenth
# of the step. Compiled with numba it takes about 6 us there. The first process compiles it
# (about 3 s) into numba's cache on disk; later ones load it (under a second, once per process).
# A compiled and cached function keeps the values of the globals it was compiled with, and
# numba recompiles it only when this file changes: so the limits, which come from other modules
# (sims.robot, the controller's step sizes), are passed in one array (``_params``); only this
# file's own two gains (_DAMPING2, _NULL_GAIN) are compiled in.
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
# the layout of a controller's parameter array (``_params``)
_P_WS_LO, _P_WS_HI, _P_Q_LO, _P_Q_HI, _P_HOME, _P_STEP = 0, 3, 6, 13, 20, 27
_P_EE_STEP, _P_YAW_STEP, _P_FINGER, _P_SIZE = 34, 35, 36, 37


@functools.lru_cache(maxsize=16)
def _params(dt: float, max_ee_step: float = 0.0, max_yaw_step: float = 0.0) -> np.ndarray:
    """The controller's limits in one float64 array, for the compiled functions (layout _P_*);
    one array per set of arguments, shared (the compiled functions only read it)."""
    p = np.concatenate((WS_LOW, WS_HIGH, _Q_LO, _Q_HI, robot.HOME_Q, robot.DQ_MAX * dt,
                        (max_ee_step, max_yaw_step, robot.FINGER_MAX)))
    assert p.size == _P_SIZE
    return p


@numba.njit(**_JIT)
def _down_orientation_error(rot, yaw):
    r00, r01, r02 = rot[0, 0], rot[0, 1], rot[0, 2]
    r10, r11, r12 = rot[1, 0], rot[1, 1], rot[1, 2]
    r20, r21 = rot[2, 0], rot[2, 1]
    c, s = math.cos(yaw), math.sin(yaw)
    return (0.5 * (-r12 - (s * r20 - c * r21)),
            0.5 * ((c * r20 + s * r21) + r02),
            0.5 * ((s * r00 - c * r01) - (c * r10 + s * r11)))


def down_orientation_error(rot: np.ndarray, yaw: float) -> list[float]:
    """orientation_error(rot, down_rotation(yaw)) written out in scalars (as the compiled
    controller computes it; tests/test_robot.py checks it against the matrix form)."""
    return list(_down_orientation_error(np.asarray(rot, dtype=np.float64), float(yaw)))


@numba.njit(**_JIT)
def _wrist_yaw_step(yaw_step, q7, axis_z, lo_q7, hi_q7):
    if abs(axis_z) < 0.5:
        return yaw_step
    dq = yaw_step / axis_z
    lo, hi = lo_q7 - q7, hi_q7 - q7
    if dq > hi:
        dq = hi if hi > 0.0 else 0.0
    elif dq < lo:
        dq = lo if lo < 0.0 else 0.0
    return dq * axis_z


def wrist_yaw_step(yaw_step: float, q7: float, axis_z: float) -> float:
    """The part of a commanded tool yaw step (rad) that the wrist can turn.

    With the tool pointing down, the last joint turns the tool's yaw by ``axis_z`` (the world z
    component of its axis, near -1) per radian. A step that would carry that joint past its
    limit (less the clamp's margin) is cut to the room left: asked of the IK in full, the
    clamped wrist left the other joints chasing the yaw, and the tool hardly moved where it was
    sent (a planner holding the yaw command at the limit saw its tool stall for tens of steps).
    A tool not pointing down (|axis_z| < 0.5) is left alone.
    """
    return _wrist_yaw_step(float(yaw_step), float(q7), float(axis_z), float(_Q_LO[6]), float(_Q_HI[6]))


@numba.njit(**_JIT)
def _ik_into(jac, err, q, p, out):
    """ik_step into out[:7]; err (6,) is overwritten. p: the parameter array (_P_*)."""
    posture = np.empty(7)
    for j in range(7):
        posture[j] = _NULL_GAIN * (p[_P_HOME + j] - q[j])
    for i in range(6):
        acc = 0.0
        for j in range(7):
            acc += jac[i, j] * posture[j]
        err[i] -= acc
    # J J^T + l^2 I, symmetric positive definite: Cholesky L L^T, then two triangular solves
    a = np.empty((6, 6))
    for i in range(6):
        for k in range(i + 1):
            acc = 0.0
            for j in range(7):
                acc += jac[i, j] * jac[k, j]
            a[i, k] = acc
        a[i, i] += _DAMPING2
    for i in range(6):
        for k in range(i + 1):
            acc = a[i, k]
            for j in range(k):
                acc -= a[i, j] * a[k, j]
            a[i, k] = math.sqrt(acc) if i == k else acc / a[k, k]
    for i in range(6):  # L y = e
        acc = err[i]
        for j in range(i):
            acc -= a[i, j] * err[j]
        err[i] = acc / a[i, i]
    for i in range(5, -1, -1):  # L^T x = y
        acc = err[i]
        for j in range(i + 1, 6):
            acc -= a[j, i] * err[j]
        err[i] = acc / a[i, i]
    for j in range(7):
        t = 0.0
        for i in range(6):
            t += err[i] * jac[i, j]
        out[j] = t + q[j] + posture[j]
    _clamp_into(q, out, p, out)


@numba.njit(**_JIT)
def _clamp_into(q, target, p, out):
    """Seven joint targets clamped to the velocity limits over a control step (p[_P_STEP:])
    and the position limits less their margin, into out (may be target)."""
    for j in range(7):
        t = target[j]
        # raised to lo, then lowered to hi (hi wins should they cross); a NaN stays NaN
        lo, hi = q[j] - p[_P_STEP + j], q[j] + p[_P_STEP + j]
        if lo < p[_P_Q_LO + j]:
            lo = p[_P_Q_LO + j]
        if hi > p[_P_Q_HI + j]:
            hi = p[_P_Q_HI + j]
        if t < lo:
            t = lo
        out[j] = hi if t > hi else t


@numba.njit(**_JIT)
def _clamp_batch(q, target, p):
    for e in range(q.shape[0]):
        _clamp_into(q[e], target[e], p, target[e])


@numba.njit(**_JIT)
def _ee_command_into(action, q, tcp_pos, rot, jac, p, out):
    """EEController.command for one arm into out (9,): False, out untouched, if the action
    holds NaN or infinite values. The action is clipped to [-1, 1] here."""
    a = np.empty(5)
    for i in range(5):
        x = float(action[i])
        if not math.isfinite(x):
            return False
        a[i] = -1.0 if x < -1.0 else 1.0 if x > 1.0 else x
    err = np.empty(6)
    for i in range(3):
        # deltas from where the tool is now (not from an integrated target), so a closed-loop
        # policy never double-counts the servo's lag
        t = tcp_pos[i] + a[i] * p[_P_EE_STEP]
        t = max(t, p[_P_WS_LO + i])
        err[i] = min(t, p[_P_WS_HI + i]) - tcp_pos[i]
    yaw = math.atan2(rot[1, 0], rot[0, 0]) + _wrist_yaw_step(
        a[3] * p[_P_YAW_STEP], q[6], jac[5, 6], p[_P_Q_LO + 6], p[_P_Q_HI + 6])
    err[3], err[4], err[5] = _down_orientation_error(rot, yaw)
    _ik_into(jac, err, q, p, out)
    out[7] = out[8] = 0.5 * (a[4] + 1.0) * p[_P_FINGER]
    return True


@numba.njit(**_JIT)
def _ee_command_batch(action, q, tcp_pos, rot, jac, p, out):
    """_ee_command_into over E arms (the same numbers, arm by arm): the first arm whose
    action is not finite, or -1."""
    for e in range(action.shape[0]):
        if not _ee_command_into(action[e], q[e], tcp_pos[e], rot[e], jac[e], p, out[e]):
            return e
    return -1


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
        (7,) joint targets inside position limits, at most DQ_MAX * dt from q.
    """
    out = np.empty(7)
    _ik_into(np.asarray(jac, dtype=np.float64), np.array(pose_err, dtype=np.float64),
             np.asarray(q, dtype=np.float64), _params(dt), out)
    return out


def clamp_joint_target(q: np.ndarray, target, dt: float) -> np.ndarray:
    """Clamp a (7,) joint target to the velocity limits over dt and the position limits."""
    out = np.empty(7)
    _clamp_into(np.asarray(q, dtype=np.float64), np.asarray(target, dtype=np.float64), _params(dt), out)
    return out


def clamp_joint_targets(q: np.ndarray, target: np.ndarray, dt: float) -> np.ndarray:
    """``clamp_joint_target`` over a batch: q, target (E, 7); target is clamped in place."""
    _clamp_batch(np.asarray(q, dtype=np.float64), target, _params(dt))
    return target



class EEController:
    """Turns [-1, 1] actions into joint and finger targets.

    In 'ee' mode an action is (dx, dy, dz, dyaw, grip); in 'joint' mode (dq1..dq7, grip).
    grip +1 opens the fingers fully and -1 closes them. Actions are clipped to [-1, 1].
    """

    def __init__(self, max_ee_step: float, max_yaw_step: float, max_joint_step: float,
                 dt: float, mode: str = "ee") -> None:
        self.max_ee_step, self.max_yaw_step = max_ee_step, max_yaw_step
        self.max_joint_step, self.dt, self.mode = max_joint_step, dt, mode
        self._params = _params(dt, max_ee_step, max_yaw_step)

    def command(self, action, q: np.ndarray, tcp_pos: np.ndarray, tcp_rot: np.ndarray,
                jac: np.ndarray) -> np.ndarray:
        """Nine actuator targets (9,): seven joints, two fingers. A ValueError if the action
        holds NaN or infinite values."""
        if type(action) is not np.ndarray:
            action = np.asarray(action, dtype=np.float64)
        if self.mode == "joint":
            a = _finite_clipped(action[None])[0]
            out = np.empty(9)
            _clamp_into(q, q + a[:7] * self.max_joint_step, self._params, out[:7])
            out[7] = out[8] = 0.5 * (a[-1] + 1.0) * robot.FINGER_MAX
            return out
        # the compiled function does not check bounds: a shape it does not expect is refused here
        if action.shape != (5,) or q.shape != (7,) or tcp_pos.shape != (3,) or tcp_rot.shape != (3, 3) \
                or jac.shape != (6, 7):
            raise ValueError(f"shapes action {action.shape}, q {q.shape}, tcp_pos {tcp_pos.shape}, "
                             f"tcp_rot {tcp_rot.shape}, jac {jac.shape}; expected (5,), (7,), (3,), "
                             "(3, 3), (6, 7)")
        out = np.empty(9)
        if not _ee_command_into(action, q, tcp_pos, tcp_rot, jac, self._params, out):
            raise ValueError(f"action {action.tolist()} contains NaN or infinite values; expected "
                             "finite numbers in [-1, 1]")
        return out

    def command_batch(self, action: np.ndarray, q: np.ndarray, tcp_pos: np.ndarray,
                      tcp_rot: np.ndarray, jac: np.ndarray) -> np.ndarray:
        """``command`` for E arms at once, the same numbers bit for bit (tests check it).

        action: (E, A) in [-1, 1]; q: (E, 7); tcp_pos: (E, 3); tcp_rot: (E, 3, 3);
        jac: (E, 6, 7). Returns (E, 9) actuator targets.
        """
        out = np.empty((len(action), 9))
        if self.mode == "joint":
            a = _finite_clipped(action)
            out[:, 7] = 0.5 * (a[:, -1] + 1.0) * robot.FINGER_MAX
            out[:, 8] = out[:, 7]
            out[:, :7] = q + a[:, :7] * self.max_joint_step
            _clamp_batch(q, out[:, :7], self._params)
            return out
        e = len(action)
        if action.shape != (e, 5) or q.shape != (e, 7) or tcp_pos.shape != (e, 3) \
                or tcp_rot.shape != (e, 3, 3) or jac.shape != (e, 6, 7):
            raise ValueError(f"shapes action {action.shape}, q {q.shape}, tcp_pos {tcp_pos.shape}, "
                             f"tcp_rot {tcp_rot.shape}, jac {jac.shape}; expected (E, 5), (E, 7), "
                             "(E, 3), (E, 3, 3), (E, 6, 7)")
        bad = _ee_command_batch(action, q, tcp_pos, tcp_rot, jac, self._params, out)
        if bad >= 0:
            raise ValueError(f"action {action[bad].tolist()} of arm {bad} contains NaN or infinite "
                             "values; expected finite numbers in [-1, 1]")
        return out


def _finite_clipped(a: np.ndarray) -> np.ndarray:
    """(E, A) actions as float64 clipped to [-1, 1]; a ValueError if any is not finite."""
    if not np.isfinite(a).all():
        raise ValueError(f"actions {np.asarray(a).tolist()} contain NaN or infinite values; "
                         "expected finite numbers in [-1, 1]")
    return np.clip(np.asarray(a, dtype=np.float64), -1.0, 1.0)
