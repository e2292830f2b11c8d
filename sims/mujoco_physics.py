"""MuJoCo backend: named accessors over MjModel / MjData, kept apart from task logic."""

from __future__ import annotations

import math

import mujoco
import numpy as np

from sims import robot, scene
from sims.config import TaskConfig
from sims.physics import (
    FLAT_DQ,
    FLAT_FINGER,
    FLAT_OBJECTS,
    FLAT_Q,
    FLAT_ROT,
    FLAT_TCP_POS,
    FLAT_TCP_QUAT,
    EpisodeSpec,
    WorldState,
    grasp_min_opening,
)

_MAX_SPEED2 = 1e3**2  # any joint faster than 1e3 (rad or m)/s means the simulation diverged


def yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


class MujocoPhysics:
    """One MuJoCo simulation of a task scene."""

    def __init__(self, cfg: TaskConfig, model: mujoco.MjModel | None = None) -> None:
        self.cfg = cfg
        self.model = model if model is not None else mujoco.MjModel.from_xml_string(
            scene.build_mjcf(cfg))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.nobj = scene.num_objects(cfg)
        self.substeps = cfg.substeps
        # a live view of MuJoCo's counters of bad qpos, qvel and qacc (one block of its warnings)
        bad = [int(w) for w in (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
                                mujoco.mjtWarning.mjWARN_BADQACC)]
        if bad != list(range(bad[0], bad[0] + 3)):
            raise RuntimeError(f"MuJoCo's divergence warnings are not one block ({bad})")
        self._bad = self.data.warning.number[bad[0]:bad[0] + 3]
        self._tcp = m.site("tcp").id
        self._hand = m.body("hand").id  # the tool frame is the hand frame, shifted along z
        self._goal_site = m.site("goal").id
        self._zone = m.geom("zone").id
        self._obj_geom = np.array([m.geom(f"obj{i}").id for i in range(self.nobj)])
        self._obj_adr = np.array([m.jnt_qposadr[m.joint(f"obj{i}").id] for i in range(self.nobj)])
        self._obj_dof = np.array([m.jnt_dofadr[m.joint(f"obj{i}").id] for i in range(self.nobj)])
        self._obstacles = np.array([m.geom(f"obstacle{i}").id for i in range(cfg.num_obstacles)],
                                   dtype=int)
        # The obstacles are world geoms moved at reset, and the world body's bounding-volume
        # tree is built once, at compile time, around where they were parked: the midphase then
        # culled every contact with an obstacle, and the arm and objects passed through them
        # (found 2026-12-06; updating the tree's nodes did not reach MuJoCo's static tree). With
        # the midphase off, each body pair's geoms are still culled by their bounding spheres.
        if self._obstacles.size:
            m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_MIDPHASE)
        # contact sensors (computed in C each step): left pad, right pad, arm vs world
        self._sensor_idx = np.array([m.sensor_adr[m.sensor(n).id]
                                     for n in ("grasp_left", "grasp_right", "collision")])
        # all objects' qpos as one (N, 7) view: positions then quaternions
        self._obj_qpos_idx = (self._obj_adr[:, None] + np.arange(7)).ravel()
        self._bind_jac(np.zeros((6, m.nv)))
        self._jac_bound = False  # a vector env's buffer (bind_jacobian), kept current
        self._renderers: dict = {}
        self._links: np.ndarray | None = None  # which bodies are arm links (link_contact)
        # Views of MjData's arrays, taken once: each attribute read of MjData builds a new
        # numpy view (about 0.3 us), and state() runs every control step. MjData never
        # reallocates its arrays, so the views stay valid for its lifetime.
        d = self.data
        self._qpos, self._qvel, self._ctrl = d.qpos, d.qvel, d.ctrl
        self._tcp_xpos, self._tcp_xmat = d.site_xpos[self._tcp], d.site_xmat[self._tcp].reshape(3, 3)
        self._hand_xquat = d.xquat[self._hand]
        left = int(self._sensor_idx[0])  # scene.build_mjcf writes the three one after another
        if self._sensor_idx.tolist() != [left, left + 1, left + 2]:
            raise RuntimeError(f"the contact sensors are not one block of sensordata ({self._sensor_idx.tolist()})")
        # the three sensors and the two finger joints as views: state() reads each with one tolist()
        self._sensors, self._fingers = d.sensordata[left:left + 3], d.qpos[7:9]
        # what state() gathers, as views in the order of WorldState.flat: q, dq, a placeholder
        # for the finger opening, tool position and quaternion, tool rotation, and the objects'
        # qpos, one block (scene.build_mjcf writes their free joints one after another)
        idx = self._obj_qpos_idx
        start = int(idx[0]) if idx.size else 0
        if not np.array_equal(idx, np.arange(start, start + idx.size)):
            raise RuntimeError(f"the objects' free joints are not one block of qpos ({idx.tolist()})")
        self._gather = (self._qpos[:7], self._qvel[:7], self._qpos[7:8], self._tcp_xpos,
                        self._hand_xquat, d.site_xmat[self._tcp], d.qpos[start:start + idx.size])
        self._grasp_min = 0.0  # set per episode by reset
        self._bad_seen = [0, 0, 0]  # MuJoCo's counts of divergence warnings at the last check

    # ---- episode set-up -------------------------------------------------------------------
    def reset(self, episode: EpisodeSpec) -> None:
        m, d = self.model, self.data
        # Model fields first: with sleeping on, mj_resetData is where the poses of static
        # (world) geoms are computed, so obstacles and markers must be in place before it.
        for i, obj in enumerate(episode.objects):
            self._set_object(i, obj.shape, obj.half, scene.COLOURS[obj.colour])
        park = np.array(scene.PARK)
        m.geom_pos[self._zone] = episode.zone if episode.zone is not None else park
        m.geom_rgba[self._zone] = scene.COLOURS[episode.zone_colour][:3] + (0.6,)
        m.site_pos[self._goal_site] = episode.goal if episode.goal_marker else park
        for k, g in enumerate(self._obstacles):
            ob = episode.obstacles[k]
            m.geom_pos[g], m.geom_size[g] = ob.pos, ob.half
            m.geom_rbound[g] = float(np.linalg.norm(ob.half))
            m.geom_aabb[g] = np.concatenate((np.zeros(3), ob.half))
        mujoco.mj_resetData(m, d)
        d.qpos[:7] = robot.HOME_Q
        d.qpos[7:9] = robot.FINGER_MAX
        d.ctrl[:7] = robot.HOME_Q
        d.ctrl[7:9] = robot.FINGER_MAX
        for i, obj in enumerate(episode.objects):
            a = self._obj_adr[i]
            d.qpos[a:a + 3] = obj.pos
            d.qpos[a + 3:a + 7] = yaw_quat(obj.yaw)
        mujoco.mj_forward(m, d)
        self._grasp_min = grasp_min_opening(episode)
        self._bad_seen = self._bad.tolist()
        if self._jac_bound:
            self.jacobian()

    def _set_object(self, i: int, shape: str, half: float, rgba) -> None:
        m, g = self.model, self._obj_geom[i]
        if shape == "cube":
            m.geom_type[g] = mujoco.mjtGeom.mjGEOM_BOX
            m.geom_size[g] = (half, half, half)
        else:
            m.geom_type[g] = mujoco.mjtGeom.mjGEOM_CYLINDER
            m.geom_size[g] = (half, half, 0.0)
        m.geom_rbound[g] = half * math.sqrt(3.0)
        m.geom_aabb[g] = (0.0, 0.0, 0.0, half, half, half)
        m.geom_rgba[g] = rgba

    # ---- stepping -------------------------------------------------------------------------
    def step(self, ctrl: np.ndarray) -> bool:
        """Hold ctrl for one control period; False if the simulation went unstable."""
        self.begin(ctrl)
        self.advance()
        return self.finish()

    # The step in three parts, so that a vector env can run the heavy middle one for many
    # copies on a thread pool (MuJoCo releases the GIL in mj_step) and the light Python ends
    # on one thread, without the copies fighting over the GIL at every short MuJoCo call.
    def begin(self, ctrl: np.ndarray) -> None:
        self._ctrl[:] = ctrl

    def advance(self) -> None:
        m, d = self.model, self.data
        mujoco.mj_step(m, d, self.substeps)
        # poses and the frames the Jacobian reads, for the state after the step (mj_step leaves
        # them at the start of its last substep); here, not in finish(), so that a vector env
        # runs them on its thread pool with the physics
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        if self._jac_bound:
            mujoco.mj_jacSite(m, d, *self._jac_rows, self._tcp)

    def finish(self) -> bool:
        # MuJoCo counts what it warned of (and then reset the data) only inside mj_step, and
        # mj_resetData zeroes the counts: the count seen at the last check or reset is the
        # count before this step, so it is read once a step, here
        bad = self._bad.tolist()
        if bad != self._bad_seen:
            self._bad_seen = bad
            return False
        # NaN fails the comparison; a finite velocity keeps the integrated qpos finite
        qvel = self._qvel
        return bool(qvel.dot(qvel) < _MAX_SPEED2)  # .dot: a third of the @ operator's cost

    # ---- named accessors ------------------------------------------------------------------
    def state(self) -> WorldState:
        # Everything a step reads, gathered by one concatenate into a fresh array (so the state
        # is a snapshot); the fields are views of it (layout: sims.physics, FLAT_*)
        flat = np.concatenate(self._gather)
        f_left, f_right = self._fingers.tolist()
        finger = f_left + f_right
        flat[FLAT_FINGER] = finger  # over the placeholder the gather put there
        objs = flat[FLAT_OBJECTS:].reshape(self.nobj, 7)
        left, right, hit = self._sensors.tolist()
        return WorldState(flat[FLAT_Q], flat[FLAT_DQ], finger, flat[FLAT_TCP_POS], flat[FLAT_ROT].reshape(3, 3),
                          flat[FLAT_TCP_QUAT], objs[:, :3], objs[:, 3:],
                          bool(left and right and finger >= self._grasp_min), bool(hit), flat)

    def bind_jacobian(self, out: np.ndarray) -> None:
        """Have jacobian() write into out, a (6, nv) float64 array (a row of a vector env's
        batch), from now on, and keep out current: reset() and advance() write the Jacobian of
        the state they leave into it (so a vector env computes it on the threads that run the
        physics, and reads it without a call per copy)."""
        if out.shape != self._jac.shape or out.dtype != np.float64 or not out.flags.c_contiguous:
            raise ValueError(f"Jacobian buffer of shape {out.shape}, {out.dtype}; expected a "
                             f"C-contiguous float64 array of shape {self._jac.shape}")
        self._bind_jac(out)
        self._jac_bound = True
        self.jacobian()

    def _bind_jac(self, jac: np.ndarray) -> None:
        # the views jacobian() reads and returns, made once (a view costs about 0.3 us)
        self._jac, self._jac_rows, self._jac_arm = jac, (jac[:3], jac[3:]), jac[:, :7]

    def jacobian(self) -> np.ndarray:
        """(6, 7) Jacobian of the tool point: translation rows, then rotation rows."""
        mujoco.mj_jacSite(self.model, self.data, *self._jac_rows, self._tcp)
        return self._jac_arm

    def link_contact(self) -> bool:
        """Whether one of the arm's links (link1-link7: not the hand or the fingers) touches the
        table or an obstacle now. Read off the contact list: for evaluation, not every step."""
        if self._links is None:
            m = self.model
            self._links = np.zeros(m.nbody, bool)
            self._links[[m.body(f"link{i}").id for i in range(1, 8)]] = True
        d, m = self.data, self.model
        for c in d.contact[:d.ncon]:
            b1, b2 = m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]
            if (self._links[b1] and b2 == 0) or (self._links[b2] and b1 == 0):
                return True
        return False

    def render(self, camera: str, height: int, width: int) -> np.ndarray:
        from sims.render import OffscreenRenderer

        key = (height, width)
        if key not in self._renderers:
            self._renderers[key] = OffscreenRenderer(self.model, height, width)
        return self._renderers[key].render(self.data, camera)

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
