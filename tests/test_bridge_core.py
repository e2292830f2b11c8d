"""The bridge's ROS-free core: input checks, holds, limits, and the loop closed on the MuJoCo arm."""

from __future__ import annotations

import numpy as np
import pytest

import sims
from robotworld.ros.config import BridgeConfig
from robotworld.ros.core import BridgeCore, Trajectory, check_trajectory
from robotworld.ros.simarm import SimArm
from sims import robot


class Recording:
    """A stand-in policy that records what it saw and answers a fixed chunk."""

    def __init__(self, chunk: np.ndarray, fail: bool = False) -> None:
        self.chunk, self.fail, self.seen, self.resets = chunk, fail, [], 0

    def reset(self, seed=None, scene=None) -> None:
        self.resets += 1
        self.scene = scene

    def act(self, obs):
        if self.fail:
            raise RuntimeError("no plan")
        self.seen.append(obs)
        return self.chunk


NAMES = list(BridgeConfig().joint_names) + list(BridgeConfig().finger_names)


def _js(stamp: float, q=robot.HOME_Q, order=None, **over) -> dict:
    pos = [*map(float, q), 0.02, 0.02]
    msg = {"stamp": stamp, "name": list(NAMES), "position": pos, "velocity": [0.0] * 9}
    if order is not None:
        msg = {**msg, "name": [NAMES[i] for i in order], "position": [pos[i] for i in order]}
    return {**msg, **over}


def _core(chunk=None, **cfg) -> tuple[BridgeCore, Recording]:
    cfg.setdefault("deadline", 10.0)  # the first calls compile; the deadline test sets its own
    cfg.setdefault("autostart", True)
    pol = Recording(np.zeros((2, 5)) if chunk is None else chunk, fail=cfg.pop("fail", False))
    core = BridgeCore(BridgeConfig(task="reach", **cfg), pol, sims.make_config("reach"))
    core.on_instruction("move the gripper to the red dot")
    core.on_objects({"stamp": 0.0, "poses": [(0.5, 0, 0.02, 0, 0, 0, 1)]}, 0.0)
    core.on_goal({"stamp": 0.0, "position": (0.5, 0.1, 0.2)}, 0.0)
    core.warm = True
    return core, pol


def test_joint_states_are_matched_by_name_and_bad_ones_rejected():
    core, pol = _core()
    rng = np.random.default_rng(0)
    assert core.on_joint_state(_js(1.0, order=rng.permutation(9)), 1.0) is None
    np.testing.assert_allclose(core.joints["q"], robot.HOME_Q)  # shuffled names, the same joints
    nan = _js(1.1)
    nan["position"][2] = float("nan")
    assert core.on_joint_state(nan, 1.1).startswith("non-finite values: panda_joint3")
    unknown = _js(1.1)
    unknown["name"][0] = "elbow"
    assert core.on_joint_state(unknown, 1.1).startswith("unknown joints: elbow")
    missing = {k: v[1:] if isinstance(v, list) else v for k, v in _js(1.1).items()}
    assert core.on_joint_state(missing, 1.1).startswith("missing joints: panda_joint1")
    assert core.on_joint_state(_js(0.9), 1.1).startswith("out of order")
    assert core.on_joint_state(_js(1.2), 1.6).startswith("stale: stamp 400 ms old")
    assert core.accepted == 1 and sum(core.rejected.values()) == 5
    np.testing.assert_allclose(core.joints["q"], robot.HOME_Q)  # nothing rejected got in


def test_decisions_become_joint_targets_within_the_limits():
    core, pol = _core(chunk=np.tile([1.0, 1.0, -1.0, 1.0, -1.0], (4, 1)), velocity_max=(0.5,) * 7)
    core.on_joint_state(_js(1.0), 1.0)
    d = core.decide(1.01)
    assert not d.held, d.reason
    t = d.trajectory
    assert t.positions.shape == (4, 9) and t.joint_names == NAMES
    np.testing.assert_allclose(t.times, [0.05, 0.1, 0.15, 0.2])
    assert np.abs(t.velocities[:, :7]).max() <= 0.5 + 1e-9  # the configured limit, tighter than the arm's
    steps = np.diff(np.vstack((robot.HOME_Q, t.positions[:, :7])), axis=0)
    assert np.abs(steps).max() <= 0.5 * 0.05 + 1e-9
    assert (t.positions[:, 7:] == 0).all()  # grip -1: closed
    obs = pol.seen[-1]
    assert obs["proprio"].shape == (22,) and obs["instruction"].startswith("move")
    assert check_trajectory(t, core.q_lo, core.q_hi, core.v_max, core.cfg.finger_max) is None


def test_positions_past_the_limits_are_clamped_and_nan_never_leaves():
    core, _ = _core(chunk=np.tile([0.0, 0.0, 1.0, 0, 1], (8, 1)), position_max=tuple(robot.HOME_Q + 0.01))
    core.on_joint_state(_js(1.0), 1.0)
    d = core.decide(1.0)
    assert (d.trajectory.positions[:, :7] <= robot.HOME_Q + 0.01 + 1e-12).all()
    bad = Trajectory(NAMES, np.full((1, 9), np.nan), np.zeros((1, 9)), np.array([0.05]), 0.0)
    assert check_trajectory(bad, core.q_lo, core.q_hi, core.v_max, 0.04) == "non-finite value"
    core.policy.chunk = np.full((2, 5), np.nan)  # a policy answering NaN: held
    d = core.decide(1.0)
    assert d.held and np.isfinite(d.trajectory.positions).all()


def test_holds_and_their_reasons():
    core, pol = _core()
    assert core.decide(0.0).trajectory is None  # no joints: nothing to hold at, the reason only
    core.on_joint_state(_js(1.0), 1.0)
    assert not core.decide(1.0).held
    d = core.watchdog(1.25)  # 250 ms without a joint state
    assert d.held and "joint states stale" in d.reason
    np.testing.assert_allclose(d.trajectory.positions[0, :7], robot.HOME_Q)
    assert (d.trajectory.velocities == 0).all()
    core.hold()
    assert core.decide(1.0).reason == "holding: the hold service was called"
    core.start()
    pol.fail = True
    assert core.decide(1.0).reason.startswith("holding: the policy failed: RuntimeError: no plan")
    pol.fail = False
    core.cfg.deadline = 1e-9
    assert "deadline" in core.decide(1.0).reason
    fresh, _ = _core(autostart=False)
    fresh.on_joint_state(_js(1.0), 1.0)
    assert fresh.decide(1.0).reason == "holding: waiting for the start service"


def test_obstacles_reset_the_policy_with_the_new_scene():
    core, pol = _core()
    before = pol.resets
    core.on_obstacles([{"center": (0.5, 0.0, 0.05), "size": (0.04, 0.04, 0.1)}])
    assert pol.resets == before + 1
    np.testing.assert_allclose(pol.scene.obstacles, [[0.5, 0.0, 0.05, 0.02, 0.02, 0.05]], atol=1e-6)
    assert core.on_obstacles([{"center": (0, 0, 0), "size": (0, 1, 1)}]).startswith("obstacles")
    core.on_instruction("move the gripper to the red dot")  # the same words: the same job
    assert pol.resets == before + 1
    core.on_instruction("put the blue cube in the red zone")
    assert pol.resets == before + 2 and core.on_instruction("  ") == "instruction: empty"


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="seven distinct names"):
        BridgeConfig(joint_names=("a",) * 7).check()
    with pytest.raises(ValueError, match="velocity_max has 3 values"):
        BridgeConfig(velocity_max=(1.0, 1.0, 1.0)).check()


def test_the_core_closes_the_loop_on_the_mujoco_arm():
    """mpc-fast through the core and the simulated driver (joint trajectories, not EE actions)."""
    from policies import make_policy

    cfg = BridgeConfig(task="reach", autostart=True, deadline=10.0)
    core = BridgeCore(cfg, make_policy("mpc-fast", seed=0, device="cpu"), sims.make_config("reach"))
    arm = SimArm("reach", core.cameras, core.image_size, 0, cfg.joint_names, cfg.finger_names)
    core.on_instruction(arm.instruction())
    t = 100.0
    assert arm.obs["proprio"].shape == (22,)
    for _ in range(120):
        core.on_joint_state(arm.joint_state(t), t)
        core.on_objects(arm.objects(t), t)
        core.on_goal(arm.goal(t), t)
        np.testing.assert_allclose(core.observation()["proprio"], arm.obs["proprio"], atol=1e-5)
        d = core.decide(t)
        arm.command(d.trajectory.times, d.trajectory.positions, t)
        t += 0.05
        if arm.step(t):
            core.on_instruction(arm.instruction())
            core.reset()
        if arm.episodes >= 2:
            break
    assert arm.successes >= 2, (arm.episodes, arm.done_reason)
