"""Contract tests over the whole registry, in both engines."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sims
from policies import ZeroPolicy
from robotworld.policy import Scene
from sims.wrappers import for_sb3


def rollout(env, seed, steps, action_seed=0):
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed)
    traj = [obs]
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        traj.append((obs, r, term, trunc, info))
        if term or trunc:
            break
    return traj


def test_gym_ids_registered(task):
    env = gym.make(sims.GYM_IDS[task])
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()


def test_gymnasium_check_env(task, sim):
    env = sims.make(task, sim=sim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, skip_render_check=True)
    env.close()


def test_sb3_check_env(task):
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env = for_sb3(sims.make(task))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check(env)
    env.close()


def test_shapes_dtypes_finite_and_reward_bounds(task, sim):
    env = sims.make(task, sim=sim)
    for step in rollout(env, seed=3, steps=60)[1:]:
        obs, r, term, trunc, info = step
        assert env.observation_space.contains(obs)
        for k in ("proprio", "objects", "goal"):
            assert obs[k].dtype == np.float32 and np.isfinite(obs[k]).all()
        assert 0.0 <= r <= 1.0
        assert set(info) >= {"is_success", "is_grasped", "collision"}
    env.close()


def test_seeded_episodes_are_bit_identical(task, sim):
    a = rollout(sims.make(task, sim=sim), seed=11, steps=40)
    b = rollout(sims.make(task, sim=sim), seed=11, steps=40)
    assert len(a) == len(b)
    for x, y in zip(a[1:], b[1:]):
        for k in ("proprio", "objects", "goal"):
            np.testing.assert_array_equal(x[0][k], y[0][k])
        assert x[0]["instruction"] == y[0]["instruction"] and x[1] == y[1]
    c = rollout(sims.make(task, sim=sim), seed=12, steps=1)
    assert not np.array_equal(a[0]["objects"], c[0]["objects"])


def test_do_nothing_never_succeeds(task, sim):
    env = sims.make(task, sim=sim)
    policy = ZeroPolicy()
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        policy.reset(seed, Scene.of(env))
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(policy.act(obs)[0])
            assert not info["is_success"]
            done = term or trunc
    env.close()


def test_cameras_render_non_constant_images():
    env = sims.make("pick_place", cameras=("front", "wrist"), image_size=(64, 80))
    obs, _ = env.reset(seed=0)
    for cam in ("front", "wrist"):
        img = obs[f"image_{cam}"]
        assert img.shape == (64, 80, 3) and img.dtype == np.uint8
        assert img.std() > 5.0
    obs2, *_ = env.step(np.array([1, 0, -1, 0, 1], np.float32))
    assert not np.array_equal(obs["image_wrist"], obs2["image_wrist"])
    env.close()


def test_pybullet_cameras_render():
    env = sims.make("lift", sim="pybullet", cameras=("front",), image_size=(48, 48))
    obs, _ = env.reset(seed=0)
    assert obs["image_front"].shape == (48, 48, 3) and obs["image_front"].std() > 5.0
    env.close()


@pytest.mark.parametrize("bad", [np.array([np.nan, 0, 0, 0, 0]), np.array([0, np.inf, 0, 0, 0])])
def test_non_finite_action_is_rejected(bad):
    env = sims.make("lift")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        env.step(bad)


def test_wrong_action_shape_is_rejected():
    env = sims.make("lift")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\); expected \(5,\)"):
        env.step(np.zeros(3))


def test_actions_as_lists_ints_and_out_of_range_floats_step_alike():
    """The checked action is the same whatever form it comes in: a float32 array (the fast
    path), a list, an int array; values beyond [-1, 1] are clipped, not refused."""
    trajs = []
    for form in (lambda a: a.astype(np.float32), lambda a: a.tolist(), lambda a: a.astype(np.int64),
                 lambda a: a * 3.0):
        env = sims.make("lift")
        env.reset(seed=0)
        obs = [env.step(form(a))[0]["proprio"] for a in np.array([[1, -1, 0, 1, -1], [0, 1, -1, -1, 1]] * 3)]
        trajs.append(np.stack(obs))
    for t in trajs[1:]:
        np.testing.assert_array_equal(t, trajs[0])


@pytest.mark.parametrize("task", ["reach", "pick_place_clutter"])
def test_gathered_state_matches_its_fields(task):
    """MuJoCo gathers the state in one array (WorldState.flat); its fields are views of it and
    the observation cast from it equals the one concatenated field by field."""
    from sims.physics import FLAT_OBJECTS, FLAT_ROT

    env = sims.make(task)
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs, *_ = env.step(rng.uniform(-1, 1, 5))
    u = env.unwrapped
    s = u.world_state
    d = u.physics.data
    np.testing.assert_array_equal(s.q, d.qpos[:7])
    np.testing.assert_array_equal(s.dq, d.qvel[:7])
    assert s.finger == d.qpos[7] + d.qpos[8]
    np.testing.assert_array_equal(s.flat[FLAT_ROT], s.tcp_rot.ravel())
    np.testing.assert_array_equal(s.flat[FLAT_OBJECTS:].reshape(-1, 7)[:, :3], s.obj_pos)
    by_field = np.concatenate((s.q, s.dq, (s.finger,), s.tcp_pos, s.tcp_quat), dtype=np.float32)
    np.testing.assert_array_equal(obs["proprio"], by_field)
    np.testing.assert_array_equal(obs["objects"], np.concatenate((s.obj_pos, s.obj_quat), 1,
                                                                 dtype=np.float32).ravel())
    before = s.q.copy()
    env.step(np.ones(5, np.float32))
    np.testing.assert_array_equal(s.q, before)  # a snapshot: the next step does not change it


def test_unknown_task_and_bad_overrides_name_the_field():
    with pytest.raises(sims.ConfigError, match="unknown task 'stack'"):
        sims.make("stack")
    with pytest.raises(sims.ConfigError, match="unknown config field 'num_obstacle'"):
        sims.make("lift", num_obstacle=2)
    with pytest.raises(sims.ConfigError, match="'num_obstacles' = -1"):
        sims.make("lift", num_obstacles=-1)
    with pytest.raises(sims.ConfigError, match="'cameras'"):
        sims.make("lift", cameras=("top",))
    with pytest.raises(sims.ConfigError, match="unknown sim 'gazebo'"):
        sims.make("lift", sim="gazebo")


def test_unstable_simulation_ends_episode_with_flag():
    env = sims.make("lift")
    env.reset(seed=0)
    env.unwrapped.physics.data.qvel[:] = 1e9
    with pytest.warns(RuntimeWarning, match="unstable"):
        obs, r, term, trunc, info = env.step(np.zeros(5, np.float32))
    assert term and info["sim_unstable"]
    assert all(np.isfinite(obs[k]).all() for k in ("proprio", "objects", "goal"))


def test_static_geoms_follow_each_reset():
    """With sleeping on, world geoms' poses are computed at reset: each episode's obstacles
    and zone must be where that episode put them, not where the previous one did."""
    env = sims.make("pick_place_clutter")
    ph = env.unwrapped.physics
    for seed in range(4):
        env.reset(seed=seed)
        ep = env.unwrapped.episode
        for k, ob in enumerate(ep.obstacles):
            np.testing.assert_allclose(ph.data.geom_xpos[ph.model.geom(f"obstacle{k}").id], ob.pos)
        np.testing.assert_allclose(ph.data.geom_xpos[ph.model.geom("zone").id], ep.zone)


def test_joint_action_mode():
    env = sims.make("reach", action_mode="joint")
    assert env.action_space.shape == (8,)
    obs, _ = env.reset(seed=0)
    q0 = obs["proprio"][:7].copy()
    for _ in range(5):
        obs, *_ = env.step(np.array([0.5, 0, 0, 0, 0, 0, 0, 1], np.float32))
    assert obs["proprio"][0] - q0[0] > 0.1


def test_collision_flag_when_fingers_hit_the_table():
    env = sims.make("lift")
    env.reset(seed=0)
    hit = False
    for _ in range(40):
        _, _, _, _, info = env.step(np.array([0.3, 0, -1, 0, -1], np.float32))
        hit |= info["collision"]
    assert hit


def test_gl_backend_is_chosen_and_exported():
    from sims.render import gl_backend

    env = sims.make("reach", cameras=("front",), image_size=(32, 32))
    env.reset(seed=0)
    import os

    assert gl_backend() in ("egl", "osmesa") and os.environ["MUJOCO_GL"] == gl_backend()
    env.close()


def test_osmesa_backend_renders_in_a_child_process():
    import subprocess
    import sys

    code = ("import sims; e = sims.make('lift', cameras=('front',), image_size=(32, 32)); "
            "o, _ = e.reset(seed=0); assert o['image_front'].std() > 5; print('ok')")
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, MUJOCO_GL="osmesa", PYOPENGL_PLATFORM="osmesa"),
                         timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-500:]


@pytest.mark.parametrize("tilt_deg, below_tcp, grasp", [(0, 0.0, True), (45, 0.03, False)])
def test_grasp_needs_the_object_between_the_pads(tilt_deg, below_tcp, grasp):
    """Closing on a cube counts as a grasp; pinching a tipped cube's top edge does not.

    Both pads touch the cube in both cases (the contact sensors fire). With the cube tipped
    45 degrees about the hand's x axis and 3 cm below the tool point, the pads meet its upper
    edge at about a third of its width: the false grasp a planner found, which a lift loses.
    Gravity is off so that the cube stays where it is put while the fingers close.
    """
    import mujoco

    env = sims.make("lift")
    env.reset(seed=0)
    u = env.unwrapped
    ph = u.physics
    m, d = ph.model, ph.data
    m.opt.gravity[:] = 0
    s = u.world_state
    adr = ph._obj_adr[0]
    d.qpos[adr:adr + 3] = s.tcp_pos - np.array([0.0, 0.0, below_tcp])
    hand, tilt, quat = np.zeros(4), np.zeros(4), np.zeros(4)
    mujoco.mju_mat2Quat(hand, s.tcp_rot.ravel())
    half_angle = np.radians(tilt_deg) / 2
    tilt[:] = (np.cos(half_angle), np.sin(half_angle), 0, 0)  # about the hand's own x axis
    mujoco.mju_mulQuat(quat, hand, tilt)
    d.qpos[adr + 3:adr + 7] = quat
    mujoco.mj_forward(m, d)
    for _ in range(15):
        _, _, _, _, info = env.step(np.array([0, 0, 0, 0, -1], np.float32))
    width = 2 * u.episode.objects[0].half
    left, right, _ = ph._sensors
    assert left > 0 and right > 0
    assert info["is_grasped"] is grasp
    assert (u.world_state.finger >= 0.5 * width) is grasp
    env.close()


def test_uniform_draws_equal_numpy_uniform():
    """The samplers' _uniform gives exactly Generator.uniform's numbers and leaves the
    generator where uniform would, so seeded episodes are what they were."""
    from sims import tasks

    for seed in range(20):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        for low, high in [((0.42, -0.18), (0.62, 0.18)), ((0.38, -0.22, 0.06), (0.66, 0.22, 0.35))] * 20:
            np.testing.assert_array_equal(tasks._uniform(a, low, high),
                                          b.uniform(np.asarray(low, float), np.asarray(high, float)))
        assert a.random() == b.random()


def test_link_contact_tells_an_arm_link_from_the_gripper():
    """``link_contact`` (what evaluation counts as arm-link contact steps) is False after a
    reset in both engines, True in MuJoCo with an obstacle moved onto the elbow, and False with
    it moved onto the gripper, where ``collision`` is still True."""
    import dataclasses

    import mujoco

    from sims.physics import ObstacleSpec

    for sim in ("mujoco", "pybullet"):
        env = sims.make("pick_place_clutter", sim=sim)
        env.reset(seed=0)
        assert not env.unwrapped.physics.link_contact(), sim
        env.close()
    env = sims.make("pick_place_clutter")
    env.reset(seed=0)
    ph = env.unwrapped.physics
    m, d = ph.model, ph.data

    ep = env.unwrapped.episode
    finger = [i for i in range(m.ngeom) if m.geom_bodyid[i] == m.body("finger_left").id][0]
    elbow, pad = d.xpos[m.body("link4").id].copy(), d.geom_xpos[finger].copy()
    for where, half, want in ((elbow, 0.03, True), (pad, 0.005, False)):
        ph.reset(dataclasses.replace(ep, obstacles=[ObstacleSpec(where, np.full(3, half)), *ep.obstacles[1:]]))
        mujoco.mj_forward(m, d)
        assert ph.link_contact() == want, where
        assert ph.state().collision, where  # the physics sees the obstacle (it once passed through)
