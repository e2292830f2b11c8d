"""The exact collision checker and the learned predictor, against MuJoCo and each other."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from robotworld.collision import train as ctrain
from robotworld.collision.exact import ExactChecker, build_model
from robotworld.collision.learned import ARM_BODIES, CollisionPredictor, segment_distance
from sims import robot


@pytest.fixture(scope="module")
def checker():
    return ExactChecker(max_obstacles=3, chunk=256)


def _tcp(q) -> np.ndarray:
    m = build_model(0)
    d = mujoco.MjData(m)
    d.qpos[:7] = q
    mujoco.mj_kinematics(m, d)
    return d.site_xpos[m.site("tcp").id].copy()


def test_hand_placed_poses(checker):
    home = robot.HOME_Q
    into_table = home.copy()
    into_table[1], into_table[3] = 1.7, -0.1  # shoulder forward, elbow open: hand in the table
    tcp = _tcp(home)
    pillar = [tcp[0], tcp[1], 0.25, 0.06, 0.06, 0.25]  # up to 0.5 m, wider than the open fingers
    beside = [tcp[0], tcp[1] + 0.3, 0.25, 0.03, 0.03, 0.25]
    q = np.stack([home, into_table, home, home])
    scenes = np.array([[beside], [beside], [pillar], [beside]])
    hits = checker.check(q, scenes)
    assert hits["world"].tolist() == [False, True, True, False]
    assert not hits["self"].any()
    assert checker.check(home[None])["world"].tolist() == [False]  # bare table


def _contacts_one_by_one(q, scene):
    """Reference labels: one MjData per pose, contacts classified from MuJoCo's contact list."""
    m = build_model(3)
    d = mujoco.MjData(m)
    bodies = [m.body(f"obstacle{i}").id for i in range(3)]
    for b, ob in zip(bodies, scene):
        g = m.geom(f"obstacle{m.body(b).name[-1]}").id
        d.mocap_pos[m.body_mocapid[b]] = ob[:3]
        m.geom_size[g], m.geom_rbound[g] = ob[3:], np.linalg.norm(ob[3:])
        m.geom_aabb[g, 3:] = m.bvh_aabb[m.body_bvhadr[b], 3:] = ob[3:]
    world = {0, *bodies}
    out = []
    for qi in q:
        d.qpos[:7], d.qpos[7:9] = qi, robot.FINGER_MAX
        mujoco.mj_fwdPosition(m, d)
        pairs = [{m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]} for c in d.contact[:d.ncon]]
        out.append((any(not (p & world) for p in pairs), any(p & world for p in pairs)))
    return np.array(out)


def test_batched_checker_matches_mujoco_one_pose_at_a_time(checker):
    rng = np.random.default_rng(3)
    q, scenes = ctrain.sample_queries(rng, 600, poses_per_scene=600)
    hits = checker.check(q, scenes[0])  # one scene for all, across three chunks of 256
    ref = _contacts_one_by_one(q, scenes[0])
    assert ref[:, 0].any() and ref[:, 1].any() and not ref.all(axis=0).any()
    np.testing.assert_array_equal(hits["self"], ref[:, 0])
    np.testing.assert_array_equal(hits["world"], ref[:, 1])
    per_pose = checker.check(q, scenes)  # the same scene given once per pose
    np.testing.assert_array_equal(per_pose["world"], hits["world"])


@pytest.mark.parametrize("q, obstacles, match", [
    (np.zeros((4, 6)), None, r"shape \(4, 6\)"),
    (np.full((2, 7), np.nan), None, "NaN"),
    (np.zeros((2, 7)), np.zeros((4, 6)) + 0.1, "max_obstacles = 3"),
    (np.zeros((2, 7)), np.array([[0.5, 0, 0.1, 0.02, -0.02, 0.1]]), "positive half"),
    (np.zeros((2, 7)), np.zeros((3, 1, 6)), r"\(B=2, K, 6\)"),
])
def test_bad_queries_are_refused(checker, q, obstacles, match):
    with pytest.raises(ValueError, match=match):
        checker.check(q, obstacles)


def test_key_points_follow_mujoco_kinematics():
    pred = CollisionPredictor()
    m = build_model(0)
    d = mujoco.MjData(m)
    rng = np.random.default_rng(0)
    q = rng.uniform(robot.Q_MIN, robot.Q_MAX, (4, 7))
    finger = np.array([0.0, 0.01, 0.03, 0.04])
    pts = pred.kin(torch.tensor(q, dtype=torch.float32), torch.tensor(finger, dtype=torch.float32))
    # the first key point of each geom, against the same point placed by MuJoCo
    geoms = [g for name in ARM_BODIES for g in range(m.ngeom) if m.geom_bodyid[g] == m.body(name).id]
    assert len(geoms) == len(pred.kin.segments)
    for i in range(4):
        d.qpos[:7], d.qpos[7:9] = q[i], finger[i]
        mujoco.mj_kinematics(m, d)
        for g, (_, first, _, _) in zip(geoms, pred.kin.segments):
            want = d.geom_xpos[g] + d.geom_xmat[g].reshape(3, 3) @ _first_local(m, g)
            np.testing.assert_allclose(pts[i, first].numpy(), want, atol=1e-5)


def _first_local(m, g) -> np.ndarray:
    """The first key point of a geom in the geom's own frame (see learned._geom_points)."""
    size = m.geom_size[g]
    if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_CAPSULE:
        return np.array([0.0, 0.0, -size[1]])
    axis, r = int(np.argmax(size)), float(np.sort(size)[1])
    out = np.zeros(3)
    out[axis] = -size[axis] + r if size[axis] > r else 0.0
    return out


def test_segment_distance_against_dense_sampling():
    rng = np.random.default_rng(1)
    p1, q1, p2, q2 = (torch.tensor(rng.normal(size=(64, 3))) for _ in range(4))
    q2[:8] = p2[:8] + (q1[:8] - p1[:8])  # parallel pairs
    got = segment_distance(p1, q1, p2, q2)
    s = torch.linspace(0, 1, 401, dtype=torch.float64)
    a = p1[:, None] + (q1 - p1)[:, None] * s[None, :, None]
    b = p2[:, None] + (q2 - p2)[:, None] * s[None, :, None]
    brute = torch.cdist(a, b).amin(dim=(1, 2))
    assert (got <= brute + 1e-9).all() and torch.allclose(got, brute, atol=5e-3)


def test_shipped_predictor_against_the_exact_checker(checker):
    model = ctrain.load("default")
    q, scenes, labels = ctrain.labelled(np.random.default_rng([7, 2]), 20_000, checker)
    res = ctrain.evaluate(model, q, scenes, labels, torch.device("cpu"))
    assert res["recall"] >= 0.99 and res["precision"] >= 0.9, res
    for head in ("self", "world"):
        assert res[f"{head}_recall"] >= 0.99, res


def test_checkpoint_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    model = CollisionPredictor().eval()
    path = tmp_path / "c.pt"
    ctrain.save(path, model, {})
    again = ctrain.load(path)
    q = torch.tensor(np.random.default_rng(0).uniform(robot.Q_MIN, robot.Q_MAX, (32, 7)),
                     dtype=torch.float32)
    assert torch.equal(model.logits(q), again.logits(q))
    body = torch.load(path, weights_only=True)
    body["state_dict"]["table.offset"] += 1.0
    torch.save(body, tmp_path / "tampered.pt")
    with pytest.raises(ctrain.CollisionCheckpointError, match="checksum"):
        ctrain.load(tmp_path / "tampered.pt")
    body["format_version"] = 99
    torch.save(body, tmp_path / "future.pt")
    with pytest.raises(ctrain.CollisionCheckpointError, match="version 99"):
        ctrain.load(tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ctrain.CollisionCheckpointError, match="not a robotworld"):
        ctrain.load(tmp_path / "junk.pt")


def _expert_run(seed: int = 1):
    """Joints, tool positions, commanded yaw steps and Jacobians of a noisy-expert clutter episode."""
    import sims
    from policies import make_policy
    from robotworld.policy import Scene

    env = sims.make("pick_place_clutter")
    pol = make_policy("noisy-expert", seed=seed)
    obs, _ = env.reset(seed=seed)
    pol.reset(seed, Scene.of(env))
    q, tool, yaw, jac = [], [], [], []
    done = False
    while not done:
        q.append(obs["proprio"][:7].copy())
        tool.append(obs["proprio"][15:18].copy())
        jac.append(env.unwrapped.physics.jacobian().copy())
        a = pol.act(obs)[0]
        yaw.append(float(np.clip(a[3], -1, 1)) * env.unwrapped.cfg.max_yaw_step)
        obs, _, term, trunc, _ = env.step(a)
        done = term or trunc
    return [torch.tensor(np.array(v), dtype=torch.float32) for v in (q, tool, yaw, jac)], env


def test_the_arm_path_follows_the_controller_in_physics():
    """ArmPath's forward kinematics and Jacobian are MuJoCo's; run open loop for 8 steps from
    the observed joints towards the tool positions physics reached, its joints stay within
    0.15 rad and its tool within 1 cm of the arm's (the servo's lag is the difference)."""
    from robotworld.collision.arm import ArmPath

    (q, tool, yaw, jac), _ = _expert_run()
    arm = ArmPath()
    tcp, _, j = arm.tool(q)
    assert float((tcp - tool).norm(dim=-1).max()) < 1e-5
    torch.testing.assert_close(j, jac, atol=1e-5, rtol=0)
    for s in range(0, len(q) - 9, 5):
        path = arm.path(q[s:s + 1], tool[s + 1:s + 9, None], yaw[s:s + 8, None])[:, 0]
        assert float((path - q[s + 1:s + 9]).abs().max()) < 0.15
        assert float((arm.tool(path)[0] - tool[s + 1:s + 9]).norm(dim=-1).max()) < 0.01
        assert ((path >= arm.q_lo - 1e-6) & (path <= arm.q_hi + 1e-6)).all()


def test_the_whole_arm_term_agrees_with_the_exact_checker_on_imagined_configurations(checker):
    """The predictor's world head without the table (what the planner's arm term reads) is the
    full predictor's where no table contact is near; on joint paths through a box placed on a
    real arm's path it flags the configurations the exact checker finds touching the box."""
    from robotworld.collision.arm import ArmCollision

    pred = ctrain.load("default")
    (q, tool, yaw, _), _ = _expert_run()
    arm = ArmCollision(pred)
    g = torch.Generator().manual_seed(0)
    H, S = 8, 256
    q0 = q[:1]
    # tool paths from the home pose towards random points over the table, past a tall box
    start = tool[0]
    ends = torch.tensor([0.35, -0.3, 0.06]) + torch.rand(1, S, 3, generator=g) * torch.tensor([0.35, 0.6, 0.2])
    paths = start + torch.linspace(0.125, 1, H)[:, None, None] * (ends - start)
    box = torch.tensor([[0.45, 0.0, 0.15, 0.03, 0.03, 0.15]])
    joints = arm.joints(q0, paths, torch.zeros(H, S)).reshape(-1, 7)
    exact = checker.check(joints.double().numpy(), box.double().numpy(), finger=robot.FINGER_MAX)["world"]
    p = arm(q0, paths, torch.zeros(H, S), torch.full((H, S), robot.FINGER_MAX), box).reshape(-1)
    assert exact.sum() > 30 and (~exact).sum() > 30, exact.sum()  # both kinds drawn
    hit = (p > 0.5).numpy()
    assert (hit & exact).sum() / exact.sum() > 0.95  # recall
    assert (hit & exact).sum() / max(hit.sum(), 1) > 0.75  # precision
    full = pred.logits(joints, box[None].expand(len(joints), -1, -1))[:, 1]
    torch.testing.assert_close(pred.world_logits(joints, box, table=True), full)
