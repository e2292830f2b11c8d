"""The learned collision predictor: thousands of (pose, scene) queries in one torch call.

Architecture. A fixed forward-kinematics layer turns a joint configuration into the world
positions of key points spread along every collision geom of the arm and gripper (three to
five points along each capsule's axis, a row along the hand box), each with the radius of the
geom around it. Three small learned heads read distance features of those points:

- table: each point's height minus its radius;
- obstacles: each point's distance to an obstacle box minus its radius, per obstacle, through
  one head shared by all obstacles (so a scene may hold any number up to the checker's);
- self: the joint angles alone (as cosines and sines), through a wider head: self-collision
  depends on nothing else, and distances between all pairs of points cost too much per query.

The features are crude stand-ins for the true geometry (points instead of capsules and boxes),
and the heads learn the rest from the exact checker's labels. ``world`` is the most likely of
the table and the obstacles. Every operation is batched over queries, in float32, on any
device.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import mujoco
import numpy as np
import torch
from torch import nn

from robotworld.collision.exact import ALWAYS_TOUCHING, NUM_JOINTS, OBSTACLE_DIM, build_model
from sims import robot

ARM_BODIES = ("link1", "link2", "link3", "link4", "link5", "link6", "link7", "hand",
              "finger_left", "finger_right")


@dataclass(frozen=True)
class PredictorConfig:
    """Sizes of the learned heads."""

    hidden: int = 32
    """Width of each head's hidden layer."""
    max_obstacles: int = 3
    """Obstacle slots of the exact checker it was trained against."""
    self_pairs: tuple[int, ...] | None = None
    """Which candidate segment pairs the self head reads (None: all). Training keeps those
    that come within a few cm of each other somewhere inside the joint limits."""


def _quat_mat(q) -> np.ndarray:
    m = np.empty(9)
    mujoco.mju_quat2Mat(m, np.asarray(q, dtype=np.float64))
    return m.reshape(3, 3)


def _geom_points(m: mujoco.MjModel, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Key points of one geom in its body's frame, (n, 3), with the radius around each, (n,)."""
    size, kind = m.geom_size[g], m.geom_type[g]
    if kind == mujoco.mjtGeom.mjGEOM_CAPSULE:
        r, half = size[0], size[1]
        n = 5 if half > 0.06 else 3  # at most ~6 cm apart: a sphere per radius or so
        local = np.stack([np.zeros(n), np.zeros(n), np.linspace(-half, half, n)], axis=1)
        radius = np.full(n, r)
    elif kind == mujoco.mjtGeom.mjGEOM_BOX:
        axis = int(np.argmax(size))
        r = float(np.sort(size)[1])  # the middle half extent: the box as a row of spheres
        n = max(2, int(np.ceil(size[axis] / r)) + 1)
        local = np.zeros((n, 3))
        local[:, axis] = np.linspace(-size[axis] + r, size[axis] - r, n) if size[axis] > r \
            else 0.0
        radius = np.full(n, r)
    else:
        raise ValueError(f"geom {m.geom(g).name}: no key points for geom type {kind}")
    rot = _quat_mat(m.geom_quat[g])
    return local @ rot.T + m.geom_pos[g], radius


class Kinematics(nn.Module):
    """Joint positions (B, 7) and finger opening to world key points (B, P, 3)."""

    def __init__(self) -> None:
        super().__init__()
        m = build_model(0)
        self.body_ids = [m.body(n).id for n in ARM_BODIES]
        # each arm body's fixed offset from its parent, with the hinge turning about local z
        self.register_buffer("offset_pos", torch.tensor(
            np.stack([m.body_pos[b] for b in self.body_ids]), dtype=torch.float32))
        self.register_buffer("offset_rot", torch.tensor(
            np.stack([_quat_mat(m.body_quat[b]) for b in self.body_ids]), dtype=torch.float32))
        self.parent = [ARM_BODIES.index(m.body(m.body_parentid[b]).name)
                       if m.body(m.body_parentid[b]).name in ARM_BODIES else -1
                       for b in self.body_ids]
        self.finger_sign = {ARM_BODIES.index("finger_left"): 1.0,
                            ARM_BODIES.index("finger_right"): -1.0}
        pts, rad, owner, self.segments = [], [], [], []
        for k, b in enumerate(self.body_ids):
            for g in range(m.ngeom):
                if m.geom_bodyid[g] == b:
                    p, r = _geom_points(m, g)
                    first = sum(map(len, rad))
                    # the geom as a segment between its first and last key points
                    self.segments.append((k, first, first + len(r) - 1, float(r[0])))
                    pts.append(p)
                    rad.append(r)
                    owner += [k] * len(r)
        local = np.concatenate(pts)
        self.register_buffer("radius", torch.tensor(np.concatenate(rad), dtype=torch.float32))
        self.owner = np.array(owner)
        # Every key point is an affine function of its body's pose [R | p] (3, 4), so all
        # points come out of the bodies' poses in one matrix product, (B, nb * 12) @ W: far
        # cheaper than gathering a pose per point.
        w = np.zeros((len(ARM_BODIES) * 12, len(local) * 3))
        for k, (b, x) in enumerate(zip(owner, local)):
            for i in range(3):
                w[b * 12 + i * 4: b * 12 + i * 4 + 3, k * 3 + i] = x
                w[b * 12 + i * 4 + 3, k * 3 + i] = 1.0
        self.register_buffer("points_of_poses", torch.tensor(w, dtype=torch.float32))
        # the fixed base (link0) as segments in the world frame, for self-collision
        base = m.body("link0").id
        self.base_segments = []
        for g in range(m.ngeom):
            if m.geom_bodyid[g] == base:
                p, r = _geom_points(m, g)
                self.base_segments.append((p[0] + m.body_pos[base], p[-1] + m.body_pos[base],
                                           float(r[0])))

    def forward(self, q: torch.Tensor, finger: torch.Tensor) -> torch.Tensor:
        rots, poss = self.frames(q, finger)
        poses = torch.cat((rots, poss[..., None]), dim=-1)
        return (poses.reshape(len(q), -1) @ self.points_of_poses).view(len(q), -1, 3)

    def frames(self, q: torch.Tensor, finger: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World rotations (B, nb, 3, 3) and positions (B, nb, 3) of the ``ARM_BODIES``; body k
        < 7 turns about its own z axis by q[:, k] (``robotworld.collision.arm`` reads the joint
        axes and origins from here)."""
        c, s = torch.cos(q), torch.sin(q)
        rots: list[torch.Tensor] = []
        poss: list[torch.Tensor] = []
        for k in range(len(ARM_BODIES)):
            par = self.parent[k]
            off_p, off_r = self.offset_pos[k], self.offset_rot[k]
            if par < 0:
                rot = off_r.expand(q.shape[0], 3, 3)
                pos = off_p.expand(q.shape[0], 3)
            else:
                rot = rots[par] @ off_r
                pos = poss[par] + rots[par] @ off_p
            if k < NUM_JOINTS:  # hinge about the body's local z
                x, y = rot[..., 0], rot[..., 1]
                ck, sk = c[:, k:k + 1], s[:, k:k + 1]
                rot = torch.stack((x * ck + y * sk, y * ck - x * sk, rot[..., 2]), dim=-1)
            elif k in self.finger_sign:  # slide along the hand's y axis
                pos = pos + rot[..., 1] * (self.finger_sign[k] * finger)[:, None]
            rots.append(rot)
            poss.append(pos)
        return torch.stack(rots, 1), torch.stack(poss, 1)


def segment_distance(p1, q1, p2, q2, eps: float = 1e-9) -> torch.Tensor:
    """Shortest distance between segments [p1, q1] and [p2, q2], batched over leading dims.

    The closest point on the second segment for the first's clamped optimum, then the first's
    closest point to that (exact for segments; parallel ones take s = 0).
    """
    d1, d2, r = q1 - p1, q2 - p2, p1 - p2
    a, e = (d1 * d1).sum(-1), (d2 * d2).sum(-1)
    b, c, f = (d1 * d2).sum(-1), (d1 * r).sum(-1), (d2 * r).sum(-1)
    denom = a * e - b * b
    s = torch.where(denom > eps, ((b * f - c * e) / denom.clamp_min(eps)).clamp(0.0, 1.0),
                    torch.zeros_like(a))
    t = ((b * s + f) / e.clamp_min(eps)).clamp(0.0, 1.0)
    s = ((b * t - c) / a.clamp_min(eps)).clamp(0.0, 1.0)
    return (p1 + d1 * s[..., None] - p2 - d2 * t[..., None]).norm(dim=-1)


class GapHead(nn.Module):
    """Collision logit from n distance features (cm), any of which near zero means contact.

    The logit is the largest of n learned affine maps, one per feature (contact happens
    where any one distance closes, a maximum an MLP over all n approximates poorly), plus a
    small MLP over all of them for what the features get wrong together.
    """

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(n_in))  # softplus(0) + 0.5: about 1.2 per cm
        self.offset = nn.Parameter(torch.zeros(n_in))
        self.mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per = (nn.functional.softplus(self.scale) + 0.5) * (self.offset - x)
        return per.amax(dim=-1, keepdim=True) + self.mlp(x.clamp_max(20.0))


class CollisionPredictor(nn.Module):
    """p(self-collision) and p(world collision) for (pose, scene) queries.

    Example:
        pred = CollisionPredictor()
        probs = pred(q, obstacles)  # {"self": (B,), "world": (B,)} probabilities
        hits = pred.predict(q, obstacles)  # booleans at the operating thresholds
    """

    def __init__(self, cfg: PredictorConfig = PredictorConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.kin = Kinematics()
        # self-collision: every pair of geom segments on bodies that can touch (not parent
        # and child, not overlapping by construction, not the two fingers)
        m = build_model(0)
        skip = {frozenset(p) for p in ALWAYS_TOUCHING} | {frozenset(("finger_left", "finger_right"))}
        segs = [("link0", None, None, r) for _, _, r in self.kin.base_segments]
        segs += [(ARM_BODIES[k], a, b, r) for k, a, b, r in self.kin.segments]
        base_ends = [(p0, p1) for p0, p1, _ in self.kin.base_segments]

        def adjacent(x: str, y: str) -> bool:
            ix, iy = m.body(x).id, m.body(y).id
            return m.body_parentid[ix] == iy or m.body_parentid[iy] == ix

        pairs = [(i, j) for i, j in itertools.combinations(range(len(segs)), 2)
                 if segs[i][0] != segs[j][0] and not adjacent(segs[i][0], segs[j][0])
                 and frozenset((segs[i][0], segs[j][0])) not in skip]
        self.candidate_pairs = len(pairs)
        if cfg.self_pairs is not None:
            pairs = [pairs[i] for i in cfg.self_pairs]
        n_base = len(base_ends)
        # endpoints index into [base segment ends (2 per base segment), arm key points]
        def ends(i):
            if i < n_base:
                return 2 * i, 2 * i + 1
            _, a, b, _ = segs[i]
            return 2 * n_base + a, 2 * n_base + b

        self.register_buffer("base_ends", torch.tensor(
            np.array([e for pe in base_ends for e in pe]), dtype=torch.float32).reshape(-1, 3))
        idx = np.array([ends(i) + ends(j) for i, j in pairs])
        self.register_buffer("seg_idx", torch.tensor(idx.T.copy()))  # (4, pairs)
        self.register_buffer("seg_radii", torch.tensor(
            [segs[i][3] + segs[j][3] for i, j in pairs], dtype=torch.float32))
        self.num_pairs = len(pairs)
        n_pts = len(self.kin.radius)
        self.table = GapHead(n_pts, cfg.hidden)
        self.obstacle = GapHead(n_pts, cfg.hidden)
        self.self_ = GapHead(self.num_pairs, cfg.hidden)
        # operating thresholds on the probabilities, set after training (see train.py)
        self.register_buffer("threshold", torch.tensor([0.5, 0.5]))

    def features(self, q: torch.Tensor, obstacles: torch.Tensor, finger: torch.Tensor):
        """Distance features in cm: table (B, P), obstacles (B, K, P), self pairs (B, S)."""
        pts = self.kin(q, finger)  # (B, P, 3)
        table, obst = self._world_features(pts, obstacles)
        every = torch.cat((self.base_ends.expand(len(q), -1, -1), pts), dim=1)
        p1, q1, p2, q2 = every[:, self.seg_idx].unbind(1)  # each (B, S, 3)
        gap = segment_distance(p1, q1, p2, q2) - self.seg_radii
        return table, obst, (100.0 * gap).clamp_max(20.0)

    def _world_features(self, pts: torch.Tensor, obstacles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key points (B, P, 3) to table (B, P) and obstacle (B, K, P) distance features, cm."""
        r = self.kin.radius
        centre, half = obstacles[..., None, :3], obstacles[..., None, 3:]  # (B|1, K, 1, 3)
        out = ((pts[:, None] - centre).abs() - half).clamp_min(0.0)  # (B, K, P, 3)
        return 100.0 * (pts[..., 2] - r), 100.0 * (out.norm(dim=-1) - r)

    @staticmethod
    def _scene(q: torch.Tensor, obstacles: torch.Tensor | None, finger: torch.Tensor | float
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Obstacles as (B or 1, K, 6), K >= 0, and the finger opening as (B,)."""
        if obstacles is None or obstacles.shape[-2] == 0:
            obstacles = q.new_zeros((1, 0, OBSTACLE_DIM))
        if obstacles.dim() == 2:
            obstacles = obstacles[None]
        if not torch.is_tensor(finger):
            finger = q.new_full((len(q),), float(finger))
        return obstacles, finger

    def logits(self, q: torch.Tensor, obstacles: torch.Tensor | None = None,
               finger: torch.Tensor | float = robot.FINGER_MAX) -> torch.Tensor:
        """(B, 2) logits of self and world collision. obstacles: (K, 6) or (B, K, 6), K >= 0."""
        obstacles, finger = self._scene(q, obstacles, finger)
        table, obst, pairs = self.features(q, obstacles, finger)
        world = self.table(table)
        if obst.shape[1]:
            world = torch.maximum(world, self.obstacle(obst).amax(dim=1))
        return torch.cat((self.self_(pairs), world), dim=1)

    def world_logits(self, q: torch.Tensor, obstacles: torch.Tensor | None = None,
                     finger: torch.Tensor | float = robot.FINGER_MAX, table: bool = True) -> torch.Tensor:
        """(B,) logits that the arm or gripper touches the obstacles (and, with table, the
        table), without the self-collision head (``logits``' second column when table)."""
        obstacles, finger = self._scene(q, obstacles, finger)
        table_f, obst = self._world_features(self.kin(q, finger), obstacles)
        world = self.table(table_f)[:, 0] if table else q.new_full((len(q),), -30.0)
        if obst.shape[1]:
            world = torch.maximum(world, self.obstacle(obst).amax(dim=1)[:, 0])
        return world

    def forward(self, q, obstacles=None, finger=robot.FINGER_MAX) -> dict[str, torch.Tensor]:
        p = torch.sigmoid(self.logits(q, obstacles, finger))
        return {"self": p[:, 0], "world": p[:, 1]}

    @torch.no_grad()
    def predict(self, q, obstacles=None, finger=robot.FINGER_MAX) -> dict[str, torch.Tensor]:
        """Booleans at the operating thresholds chosen on validation data."""
        hit = self.logits(q, obstacles, finger) > torch.logit(self.threshold)
        return {"self": hit[:, 0], "world": hit[:, 1]}


def config_dict(cfg: PredictorConfig) -> dict:
    return asdict(cfg)
