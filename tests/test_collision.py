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
