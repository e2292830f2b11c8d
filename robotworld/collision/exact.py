"""The exact collision checker: MuJoCo's own collision detection over a batch of arm poses.

A dedicated model holds the arm and gripper (the geoms of the simulated robot), the table and
``max_obstacles`` box slots. Unlike the simulation, where arm links never touch each other,
here every pair of arm bodies may collide, except parent and child (MuJoCo's own filter) and
the pairs in :data:`ALWAYS_TOUCHING`, whose capsules overlap by construction in every pose.
Contact sensors, computed at MuJoCo's position stage, report the answer: ``self`` (arm or
gripper against arm, gripper or the fixed base) and ``world`` (arm or gripper against the
table or an obstacle: one sensor for the table and one per obstacle). The batch runs on
MuJoCo's thread pool (``mujoco.batch``), so a call with thousands of poses costs one Python
round trip per chunk, not per pose.

Obstacles are described as in :class:`sims.physics.ObstacleSpec`: an axis-aligned box,
``(cx, cy, cz, hx, hy, hz)`` in the arm's base frame, metres. A scene has up to
``max_obstacles`` of them; unused slots are parked far from the arm.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

from sims import robot

# Body pairs whose capsules overlap in every pose (found by sampling 5,000 uniform poses:
# each of these touches in all of them), so a contact between them says nothing.
ALWAYS_TOUCHING = (("link0", "link1"), ("link2", "link4"), ("link4", "link6"),
                   ("link4", "link7"), ("link5", "link7"))
OBSTACLE_DIM = 6  # centre (3), half extents (3)
NUM_JOINTS = 7
_PARK = np.array([5.0, 5.0, -5.0, 0.01, 0.01, 0.01])  # an unused obstacle slot


def collision_mjcf(max_obstacles: int) -> str:
    """MJCF of the arm, the table and ``max_obstacles`` obstacle slots, for collision only."""
    # Obstacles are mocap bodies: their poses are state (mocap_pos), computed by every
    # kinematics pass. Geoms fixed to the world body would not do: MuJoCo 4 places those once,
    # at reset, so moving one afterwards leaves its collision geometry where it was.
    slots = "".join(
        f'<body name="obstacle{i}" mocap="true" pos="5 {5 + i} -5">'
        f'<geom name="obstacle{i}" type="box" size="0.01 0.01 0.01"/></body>'
        for i in range(max_obstacles))
    obstacle_sensors = "".join(
        f'<contact name="obstacle{i}" subtree1="link0" body2="obstacle{i}" data="found" num="1"/>'
        for i in range(max_obstacles))
    excludes = "".join(f'<exclude body1="{a}" body2="{b}"/>' for a, b in ALWAYS_TOUCHING)
    return f"""
<mujoco model="robotworld_collision">
  <compiler angle="radian" autolimits="true"/>
  <default>{robot.mjcf_defaults()}</default>
  <worldbody>
    <geom name="table" type="plane" size="2 2 0.01"/>
    {slots}
    {robot.mjcf_arm()}
  </worldbody>
  <contact>{excludes}</contact>
  <sensor>
    <contact name="self" subtree1="link0" subtree2="link0" data="found" num="1"/>
    <contact name="table" subtree1="link0" body2="world" data="found" num="1"/>
    {obstacle_sensors}
  </sensor>
</mujoco>"""


def build_model(max_obstacles: int) -> mujoco.MjModel:
    """Compile :func:`collision_mjcf` with every arm, gripper and world geom able to collide."""
    spec = mujoco.MjSpec.from_string(collision_mjcf(max_obstacles))
    arm = robot.BIT_ARM
    for g in spec.geoms:
        # the robot description keeps arm links from colliding with each other in the
        # simulation; here they must, and the world collides with all of them
        g.contype, g.conaffinity = (arm, arm) if g.name.startswith(("link", "hand", "finger")) \
            else (robot.BIT_STATIC, arm)
    return spec.compile()


def check_shapes(q: np.ndarray, obstacles: np.ndarray | None, max_obstacles: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Validate a query: q (B, 7) and obstacles (K, 6) for all or (B, K, 6), one scene each.

    Returns q as float64 (B, 7) and obstacles as (B or 1, max_obstacles, 6), unused slots
    parked.
    """
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != NUM_JOINTS:
        raise ValueError(f"joint configurations have shape {q.shape}; expected (B, "
                         f"{NUM_JOINTS})")
    if not np.isfinite(q).all():
        raise ValueError("joint configurations contain NaN or infinite values")
    if obstacles is None:
        obstacles = np.zeros((0, OBSTACLE_DIM))
    obs = np.asarray(obstacles, dtype=np.float64)
    if obs.ndim == 2:
        obs = obs[None]
    if obs.ndim != 3 or obs.shape[2] != OBSTACLE_DIM or obs.shape[0] not in (1, len(q)):
        raise ValueError(f"obstacles have shape {np.shape(obstacles)}; expected (K, 6) for one "
                         f"scene or (B={len(q)}, K, 6), each row centre xyz then half extents")
    if obs.shape[1] > max_obstacles:
        raise ValueError(f"{obs.shape[1]} obstacles per scene; this checker has "
                         f"max_obstacles = {max_obstacles}")
    if not np.isfinite(obs).all() or (obs[..., 3:] <= 0).any():
        raise ValueError("obstacles must be finite with positive half extents")
    pad = np.broadcast_to(_PARK, (obs.shape[0], max_obstacles - obs.shape[1], OBSTACLE_DIM))
    return q, np.concatenate((obs, pad), axis=1)


class ExactChecker:
    """Batched ground-truth collision checks on MuJoCo's thread pool.

    Example:
        checker = ExactChecker(max_obstacles=3)
        hits = checker.check(q, obstacles)  # {"self": (B,) bool, "world": (B,) bool}
    """

    def __init__(self, max_obstacles: int = 3, nthread: int = 0, chunk: int = 4096) -> None:
        from mujoco import batch as mjbatch

        self.max_obstacles, self.chunk = max_obstacles, chunk
        self.model = build_model(max_obstacles)
        self.nthread = nthread or os.cpu_count() or 1
        self._batch = mjbatch.Batch(self.model, nsim=chunk, nthread=self.nthread)
        m = self.model
        self._qpos = self._batch.bind("qpos")
        self._mocap_pos = self._batch.bind("mocap_pos")
        self._sensordata = self._batch.bind("sensordata")
        self._slots = np.array([m.geom(f"obstacle{i}").id for i in range(max_obstacles)], int)
        bodies = [m.body(f"obstacle{i}").id for i in range(max_obstacles)]
        self._mocap = np.array([m.body_mocapid[b] for b in bodies], int)
        self._bvh = np.array([m.body_bvhadr[b] for b in bodies], int)  # one node: the box
        self._geom_size = self._batch.expand("geom_size")
        self._geom_rbound = self._batch.expand("geom_rbound")
        self._geom_aabb = self._batch.expand("geom_aabb")
        self._bvh_aabb = self._batch.expand("bvh_aabb")
        self._self = m.sensor_adr[m.sensor("self").id]
        self._world = np.array([m.sensor_adr[m.sensor(n).id] for n in
                                ["table"] + [f"obstacle{i}" for i in range(max_obstacles)]])
        self._scene: np.ndarray | None = None  # the obstacles written into every slot, if one

    def _set_obstacles(self, obs: np.ndarray, n: int) -> None:
        """Write obstacles (1 or n, max_obstacles, 6) into the first n simulations."""
        if obs.shape[0] == 1:
            if self._scene is not None and np.array_equal(self._scene, obs[0]):
                return  # the same scene as the last call: the slots already hold it
            self._scene = obs[0].copy()
            n = self.chunk  # one scene: write it everywhere, so the next call may skip this
        else:
            self._scene = None
        s = self._slots
        self._mocap_pos[:n, self._mocap] = obs[..., :3]
        self._geom_size[:n, s] = obs[..., 3:]
        self._geom_rbound[:n, s] = np.linalg.norm(obs[..., 3:], axis=-1)
        self._geom_aabb[:n, s, 3:] = obs[..., 3:]
        self._bvh_aabb[:n, self._bvh, 3:] = obs[..., 3:]

    def check(self, q: np.ndarray, obstacles: np.ndarray | None = None,
              finger: float = robot.FINGER_MAX) -> dict[str, np.ndarray]:
        """Which poses collide.

        Args:
            q: (B, 7) joint positions, radians.
            obstacles: (K, 6) for one scene shared by all poses, (B, K, 6) for one scene per
                pose, or None for the bare table.
            finger: opening of each finger, metres (open by default).
        Returns:
            {"self": (B,) bool, "world": (B,) bool}.
        """
        q, obs = check_shapes(q, obstacles, self.max_obstacles)
        out_self = np.empty(len(q), bool)
        out_world = np.empty(len(q), bool)
        stage = int(mujoco.mjtStage.mjSTAGE_POS)
        for lo in range(0, len(q), self.chunk):
            hi = min(lo + self.chunk, len(q))
            n = hi - lo
            self._set_obstacles(obs if obs.shape[0] == 1 else obs[lo:hi], n)
            self._qpos[:n, :7] = q[lo:hi]
            self._qpos[:n, 7:9] = finger
            ids = None if n == self.chunk else np.arange(n)
            self._batch.forward(ids, stage=stage)
            out_self[lo:hi] = self._sensordata[:n, self._self] > 0
            out_world[lo:hi] = (self._sensordata[:n, self._world] > 0).any(axis=1)
        return {"self": out_self, "world": out_world}
