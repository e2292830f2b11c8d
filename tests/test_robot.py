"""The one robot description yields an MJCF and a URDF that agree."""

import mujoco
import numpy as np
import pybullet as pb
import pytest

from sims import robot
from sims.bullet_physics import urdf_path


def test_mjcf_and_urdf_load_in_both_engines():
    m = mujoco.MjModel.from_xml_string(robot.arm_mjcf_model())
    assert m.njnt == 9 and m.nu == 9
    np.testing.assert_allclose(m.jnt_range[:7], np.stack([robot.Q_MIN, robot.Q_MAX], 1), atol=1e-4)
    c = pb.connect(pb.DIRECT)
    try:
        body = pb.loadURDF(urdf_path(), useFixedBase=True, physicsClientId=c)
        assert pb.getNumJoints(body, physicsClientId=c) == 11
        info = pb.getJointInfo(body, 3, physicsClientId=c)
        assert abs(info[8] - robot.Q_MIN[3]) < 1e-6 and abs(info[11] - robot.DQ_MAX[3]) < 1e-6
        # the URDF also loads into MuJoCo
        mujoco.MjModel.from_xml_string(robot.urdf())
    finally:
        pb.disconnect(c)


def test_forward_kinematics_agree_between_engines():
    m = mujoco.MjModel.from_xml_string(robot.arm_mjcf_model())
    d = mujoco.MjData(m)
    tcp = m.site("tcp").id
    c = pb.connect(pb.DIRECT)
    try:
        body = pb.loadURDF(urdf_path(), useFixedBase=True, physicsClientId=c)
        rng = np.random.default_rng(0)
        for _ in range(20):
            q = rng.uniform(robot.Q_MIN, robot.Q_MAX)
            d.qpos[:7] = q
            mujoco.mj_kinematics(m, d)
            for j in range(7):
                pb.resetJointState(body, j, q[j], physicsClientId=c)
            ls = pb.getLinkState(body, 8, computeForwardKinematics=True, physicsClientId=c)
            np.testing.assert_allclose(ls[4], d.site_xpos[tcp], atol=1e-5)
            rot = np.array(pb.getMatrixFromQuaternion(ls[5])).reshape(3, 3)
            np.testing.assert_allclose(rot, d.site_xmat[tcp].reshape(3, 3), atol=1e-5)
    finally:
        pb.disconnect(c)


def test_published_panda_limits():
    assert robot.TAU_MAX.tolist() == [87, 87, 87, 87, 12, 12, 12]
    assert np.allclose(robot.DQ_MAX[:4], 2.175) and np.allclose(robot.DQ_MAX[4:], 2.61)
    assert robot.FINGER_MAX * 2 == 0.08


def test_home_pose_points_the_tool_down():
    m = mujoco.MjModel.from_xml_string(robot.arm_mjcf_model())
    d = mujoco.MjData(m)
    d.qpos[:7] = robot.HOME_Q
    mujoco.mj_kinematics(m, d)
    z = d.site_xmat[m.site("tcp").id].reshape(3, 3)[:, 2]
    np.testing.assert_allclose(z, [0, 0, -1], atol=1e-6)


def test_scalar_orientation_error_matches_the_matrix_form():
    from sims import control

    rng = np.random.default_rng(0)
    for _ in range(20):
        quat = rng.normal(size=4)
        rot = np.empty(9)
        mujoco.mju_quat2Mat(rot, quat / np.linalg.norm(quat))
        rot = rot.reshape(3, 3)
        yaw = rng.uniform(-np.pi, np.pi)
        np.testing.assert_allclose(control.down_orientation_error(rot, yaw),
                                   control.orientation_error(rot, control.down_rotation(yaw)),
                                   atol=1e-12)


def test_ik_step_moves_the_tool_by_the_asked_delta():
    m = mujoco.MjModel.from_xml_string(robot.arm_mjcf_model())
    d = mujoco.MjData(m)
    d.qpos[:7] = robot.HOME_Q
    mujoco.mj_forward(m, d)
    tcp = m.site("tcp").id
    jac = np.zeros((6, m.nv))
    mujoco.mj_jacSite(m, d, jac[:3], jac[3:], tcp)
    before = d.site_xpos[tcp].copy()
    from sims import control

    target = control.ik_step(jac[:, :7], [0.01, -0.01, 0.005, 0.0, 0.0, 0.0], d.qpos[:7].copy(), 0.05)
    d.qpos[:7] = target
    mujoco.mj_kinematics(m, d)
    np.testing.assert_allclose(d.site_xpos[tcp] - before, [0.01, -0.01, 0.005], atol=5e-4)


def test_a_yaw_command_past_the_wrist_limit_does_not_stall_the_tool():
    """With the last joint at its limit, a yaw command that pushes further is cut to what the
    wrist can turn, so the tool still moves as asked (before: 0.34 of an asked -0.6 in y);
    a yaw command away from the limit is kept."""
    from sims import control

    m = mujoco.MjModel.from_xml_string(robot.arm_mjcf_model())
    d = mujoco.MjData(m)
    q = robot.HOME_Q.copy()
    q[6] = robot.Q_MAX[6] - 0.02  # where the joint clamp holds it
    d.qpos[:7] = q
    mujoco.mj_forward(m, d)
    tcp = m.site("tcp").id
    jac = np.zeros((6, m.nv))
    mujoco.mj_jacSite(m, d, jac[:3], jac[3:], tcp)
    jac = jac[:, :7]
    assert jac[5, 6] < -0.99  # pointing down, the wrist turns the yaw the other way round
    before, rot = d.site_xpos[tcp].copy(), d.site_xmat[tcp].reshape(3, 3).copy()
    ctl = control.EEController(0.03, 0.25, 0.1, 0.05)
    moved = {}
    for dyaw in (-1.0, 0.0, 1.0):
        target = ctl.command([0.6, -0.6, -0.4, dyaw, 0.0], q, before, rot, jac)
        d.qpos[:7] = target[:7]
        mujoco.mj_kinematics(m, d)
        moved[dyaw] = (d.site_xpos[tcp] - before) / 0.03
    np.testing.assert_allclose(moved[-1.0], [0.6, -0.6, -0.4], atol=0.06)
    np.testing.assert_array_equal(moved[-1.0], moved[0.0])  # past the limit: no yaw at all
    assert control.wrist_yaw_step(0.2, q[6], jac[5, 6]) == 0.2  # away from the limit: kept
    assert control.wrist_yaw_step(-0.2, q[6], jac[5, 6]) == 0.0
    assert control.wrist_yaw_step(-0.2, q[6], 0.1) == -0.2  # tool not pointing down: left alone


def test_joint_target_clamp_keeps_velocity_and_position_limits():
    from sims import control

    q = robot.HOME_Q.copy()
    q[1] = robot.Q_MIN[1] + 0.03  # near its lower limit
    step = robot.DQ_MAX * 0.05
    target = q + np.array([1.0, -1.0, 0.01, -0.01, 0.0, 1.0, np.nan])
    out = np.array(control.clamp_joint_target(q, target, 0.05))
    assert out[0] == q[0] + step[0]  # the velocity limit
    assert out[1] == robot.Q_MIN[1] + 0.02  # the position limit (with its margin) comes first
    assert out[2] == target[2] and out[3] == target[3]  # inside both: unchanged
    assert np.isnan(out[6])  # a NaN target is not hidden by the clamp
    # the batched form agrees, and where the limits cross (q far beyond a limit) both give hi
    q2 = np.stack([q, robot.Q_MAX + 0.5])
    t2 = np.stack([target, robot.Q_MAX + 0.1])  # below lo, and lo above hi
    batch = control.clamp_joint_targets(q2, t2.copy(), 0.05)
    np.testing.assert_array_equal(batch[0], out)
    np.testing.assert_array_equal(batch[1], control.clamp_joint_target(q2[1], t2[1], 0.05))
    np.testing.assert_array_equal(batch[1], robot.Q_MAX - 0.02)


def test_compiled_ik_step_equals_the_damped_least_squares_formula():
    """The compiled IK (hand-written Cholesky) against the formula its docstring states,
    dq = J^T (J J^T + l^2 I)^-1 (e - J p) + p, solved by numpy, then clamped, on random
    Jacobians, errors and joint positions (some near their limits, where the clamp acts)."""
    from sims import control

    rng = np.random.default_rng(0)
    clamped = 0
    for _ in range(200):
        jac = rng.normal(size=(6, 7)) * rng.uniform(0.05, 1.0)
        err = rng.normal(size=6) * 0.01
        q = rng.uniform(robot.Q_MIN + 0.02, robot.Q_MAX - 0.02)
        p = 0.1 * (robot.HOME_Q - q)
        x = np.linalg.solve(jac @ jac.T + 0.02**2 * np.eye(6), err - jac @ p)
        want = control.clamp_joint_target(q, jac.T @ x + q + p, 0.05)
        got = control.ik_step(jac, err, q, 0.05)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
        clamped += int(np.any(np.abs(jac.T @ x + p) > robot.DQ_MAX * 0.05))
    assert 10 < clamped < 190  # both sides of the velocity limit were checked


def test_controller_refuses_non_finite_actions_and_clips_the_rest():
    import sims
    from sims import control

    env = sims.make("pick_place")
    env.reset(seed=0)
    s, jac = env.world_state, env.physics.jacobian()
    ctl = env.controller
    np.testing.assert_array_equal(ctl.command([3.0, -2.0, 0.5, 9.0, -4.0], s.q, s.tcp_pos, s.tcp_rot, jac),
                                  ctl.command([1.0, -1.0, 0.5, 1.0, -1.0], s.q, s.tcp_pos, s.tcp_rot, jac))
    before = env.physics.data.ctrl.copy()
    for bad in ([np.nan, 0, 0, 0, 0], [0, 0, 0, np.inf, 0], [0, 0, 0, 0, -np.inf]):
        with pytest.raises(ValueError, match="NaN or infinite"):
            ctl.command(bad, s.q, s.tcp_pos, s.tcp_rot, jac)
        with pytest.raises(ValueError, match="arm 1 contains NaN or infinite"):
            ctl.command_batch(np.array([[0.0] * 5, bad]), s.q[None].repeat(2, 0), s.tcp_pos[None].repeat(2, 0),
                              s.tcp_rot[None].repeat(2, 0), jac[None].repeat(2, 0))
    np.testing.assert_array_equal(env.physics.data.ctrl, before)  # nothing was commanded
    with pytest.raises(ValueError, match=r"action \(3,\)"):  # the compiled code reads no further
        ctl.command([0.0] * 3, s.q, s.tcp_pos, s.tcp_rot, jac)
    with pytest.raises(ValueError, match=r"jac \(2, 6, 9\)"):
        ctl.command_batch(np.zeros((2, 5)), s.q[None].repeat(2, 0), s.tcp_pos[None].repeat(2, 0),
                          s.tcp_rot[None].repeat(2, 0), np.zeros((2, 6, 9)))
    joint = control.EEController(0.03, 0.25, 0.1, 0.05, mode="joint")
    with pytest.raises(ValueError, match="NaN or infinite"):
        joint.command([0.0] * 7 + [np.nan], s.q, s.tcp_pos, s.tcp_rot, jac)
    out = joint.command([2.0] + [0.0] * 6 + [-3.0], s.q, s.tcp_pos, s.tcp_rot, jac)
    assert out[0] == s.q[0] + 0.1 and out[7] == out[8] == 0.0  # clipped to 1 and to closed


def test_batched_controller_equals_the_single_one_bit_for_bit():
    """EEController.command_batch gives each arm exactly command()'s targets."""
    import sims

    rng = np.random.default_rng(0)
    envs = [sims.make("pick_place") for _ in range(5)]
    for i, e in enumerate(envs):
        e.reset(seed=i)
        for _ in range(int(rng.integers(1, 30))):
            e.step(rng.uniform(-1, 1, 5))
    ctl = envs[0].controller
    for _ in range(20):
        a = np.clip(rng.uniform(-1.5, 1.5, (5, 5)), -1, 1)
        states = [e.world_state for e in envs]
        jac = np.stack([e.physics.jacobian() for e in envs])
        flat = np.stack([s.flat for s in states])
        out = ctl.command_batch(a, flat[:, :7], flat[:, 15:18], flat[:, 22:31].reshape(-1, 3, 3), jac)
        for k, (e, s) in enumerate(zip(envs, states)):
            np.testing.assert_array_equal(out[k], ctl.command(a[k].tolist(), s.q, s.tcp_pos, s.tcp_rot,
                                                              e.physics.jacobian()))
        for e, ak in zip(envs, a):
            e.step(ak)
