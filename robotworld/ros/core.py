"""The bridge's core, which knows nothing of ROS: plain message dicts and numpy in, checked
joint trajectories out.

A transport (``robotworld.ros.node`` for rclpy; a test; another middleware) hands each message
to ``BridgeCore.on_*`` with the receiving time, and asks ``decide(now)`` after each accepted joint
state and ``watchdog(now)`` at the control rate. Every answer is a ``Decision``: a trajectory (the
policy's end-effector chunk turned into joint targets by the simulator's own IK and step limits,
then clamped to the configured position and velocity limits) or a hold (the last measured
positions, zero velocity), with the reason and what the policy imagined.

Safety, in one place:
- joint states are matched by name; a NaN, an unknown or a missing joint, a stamp older than the
  last one or older than ``stale_after`` is rejected with its reason and never reaches a command;
- when joint states or images go stale, a decision fails or overruns ``deadline``, the answer is
  a hold, and the reason is reported;
- no trajectory leaves with a non-finite value or one outside the limits (``check_trajectory``).

Messages (the fields of their ROS counterparts, times in seconds):
    joint_state   {"stamp", "name": [...], "position": [...], "velocity": [...]}
    image         {"stamp", "height", "width", "encoding": "rgb8", "data": bytes}
    objects       {"stamp", "poses": [(x, y, z, qx, qy, qz, qw), ...]}   target object first
    goal          {"stamp", "position": (x, y, z)}
    obstacles     [{"center": (x, y, z), "size": (sx, sy, sz)}, ...]       full sizes, m
    instruction   str
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robotworld.policy import ActionScale, Scene
from robotworld.ros.config import BridgeConfig


@dataclass
class Trajectory:
    """Joint targets at the control rate: arm joints then the two fingers."""

    joint_names: list[str]
    positions: np.ndarray  # (n, 9)
    velocities: np.ndarray  # (n, 9)
    times: np.ndarray  # (n,) seconds from the stamp
    stamp: float


@dataclass
class Decision:
    """What the node publishes after a joint state or a watchdog tick."""

    trajectory: Trajectory | None
    held: bool
    reason: str
    answers: float = 0.0
    """Stamp of the joint state this decision answers (0: a watchdog hold)."""
    decision_s: float = 0.0
    imagined: dict[str, Any] = field(default_factory=dict)
    """paths (k, H, 3) imagined tool positions, success/grasp/collision (k,), chosen index."""
    outcome: dict[str, float] = field(default_factory=dict)
    """The chosen candidate's imagined success, grasp and collision probabilities."""


def quat_of(rot: np.ndarray) -> np.ndarray:
    """The tool rotation (3, 3) as the simulator's hand quaternion (w, x, y, z).

    MuJoCo's hand quaternion is continuous in the joints and equals (0, 1, 0, 0) at home (tool
    down); of the two signs of a rotation it is the one with x >= 0 for any tool yaw within half
    a turn of home, which is the joint range the controller keeps to."""
    import mujoco

    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.asarray(rot, np.float64).reshape(-1))
    return q if q[1] >= 0 else -q


class BridgeCore:
    """One arm, one policy: inputs checked and kept, decisions turned into safe trajectories.

    Args:
        cfg: the bridge config (joint names, limits, rates, timeouts).
        policy: a robotworld policy (``reset(seed, scene)``, ``act(obs)``).
        task_cfg: the task's ``sims.TaskConfig`` (action scale, object count, cameras).
    """

    def __init__(self, cfg: BridgeConfig, policy, task_cfg) -> None:
        from robotworld.collision.arm import ArmPath
        from sims.control import EEController

        cfg.check()
        self.cfg, self.policy, self.task_cfg = cfg, policy, task_cfg
        over = getattr(policy, "env_overrides", {})
        self.cameras = tuple(over.get("cameras", ()))
        self.image_size = tuple(over.get("image_size", task_cfg.image_size))
        # object and zone poses: what a policy reads of the state (it says so; MPC and the experts do)
        self.needs_objects = bool(getattr(policy, "reads_state", True))
        self.dt = 1.0 / cfg.control_hz
        self.scale = ActionScale(float(task_cfg.max_yaw_step), float(task_cfg.max_ee_step), 0.0, self.dt)
        self.controller = EEController(task_cfg.max_ee_step, task_cfg.max_yaw_step, task_cfg.max_joint_step, self.dt)
        self.kin = ArmPath()
        self.q_lo, self.q_hi = np.array(cfg.position_min), np.array(cfg.position_max)
        self.v_max = np.array(cfg.velocity_max)
        self.names = list(cfg.joint_names) + list(cfg.finger_names)
        self.started = bool(cfg.autostart)
        self.held_by_service = False
        self.obstacles = np.zeros((0, 6), np.float32)
        self.joints: dict[str, Any] | None = None  # the last accepted joint state
        self.images: dict[str, tuple[float, np.ndarray]] = {}
        self.objects: tuple[float, np.ndarray] | None = None
        self.goal: tuple[float, np.ndarray] | None = None
        self.instruction = ""
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.last_hold_reason = ""
        self.warm = False
        self.reset(cfg.seed)

    # ---- inputs ------------------------------------------------------------------------------
    def on_joint_state(self, msg: dict, now: float) -> str | None:
        """Accept a joint state (None) or say why it is rejected (it is then ignored)."""
        why = self._check_joint_state(msg, now)
        if why:
            key = why.split(":")[0]
            self.rejected[key] = self.rejected.get(key, 0) + 1
            return why
        index = {n: i for i, n in enumerate(msg["name"])}
        pos = np.array([float(msg["position"][index[n]]) for n in self.names])
        vel = msg.get("velocity") or []
        dq = np.array([float(vel[index[n]]) for n in self.cfg.joint_names]) if len(vel) else np.zeros(7)
        self.joints = {"stamp": float(msg["stamp"]), "q": pos[:7], "fingers": pos[7:], "dq": dq, "received": now}
        self.accepted += 1
        return None

    def _check_joint_state(self, msg: dict, now: float) -> str | None:
        names, pos = list(msg.get("name", [])), list(msg.get("position", []))
        vel = list(msg.get("velocity", []) or [])
        if len(names) != len(pos) or (vel and len(vel) != len(names)):
            return f"malformed: {len(names)} names, {len(pos)} positions, {len(vel)} velocities"
        unknown = sorted(set(names) - set(self.names))
        if unknown:
            return f"unknown joints: {', '.join(unknown)} (expected {', '.join(self.names)})"
        missing = [n for n in self.names if n not in names]
        if missing:
            return f"missing joints: {', '.join(missing)}"
        if len(set(names)) != len(names):
            return "duplicate joints: a name appears twice"
        values = np.array(pos + vel, dtype=np.float64)
        if not np.isfinite(values).all():
            bad = [n for n, p in zip(names, pos) if not math.isfinite(float(p))]
            return f"non-finite values: {', '.join(bad) or 'a velocity'}"
        stamp = float(msg.get("stamp", 0.0))
        if self.joints is not None and stamp <= self.joints["stamp"]:
            return f"out of order: stamp {stamp:.3f} s is not after the last one, {self.joints['stamp']:.3f} s"
        age = now - stamp
        if age > self.cfg.stale_after:
            return f"stale: stamp {age * 1000:.0f} ms old (limit {self.cfg.stale_after * 1000:.0f} ms)"
        if age < -self.cfg.stale_after:
            return f"from the future: stamp {-age * 1000:.0f} ms ahead of this clock"
        return None

    def on_image(self, camera: str, msg: dict, now: float) -> str | None:
        """Keep a camera frame (None) or say why not."""
        h, w, enc = int(msg["height"]), int(msg["width"]), msg.get("encoding", "rgb8")
        if enc != "rgb8":
            return f"image_{camera}: encoding {enc!r}, expected rgb8"
        data = np.frombuffer(bytes(msg["data"]), np.uint8)
        if data.size != h * w * 3:
            return f"image_{camera}: {data.size} bytes for {h} x {w} rgb8"
        if self.cameras and (h, w) != tuple(self.image_size):
            return f"image_{camera}: {h} x {w}, the policy sees {self.image_size[0]} x {self.image_size[1]}"
        self.images[camera] = (float(msg.get("stamp", now)), data.reshape(h, w, 3).copy())  # writable: torch reads it
        return None

    def on_objects(self, msg: dict, now: float) -> str | None:
        poses = np.asarray(msg.get("poses", []), np.float64).reshape(-1, 7)
        if not np.isfinite(poses).all():
            return "objects: non-finite pose"
        obj = np.concatenate((poses[:, :3], poses[:, 6:7], poses[:, 3:6]), 1)  # (x y z w qx qy qz)
        self.objects = (float(msg.get("stamp", now)), obj.astype(np.float32).reshape(-1))
        return None

    def on_goal(self, msg: dict, now: float) -> str | None:
        p = np.asarray(msg["position"], np.float32)
        if p.shape != (3,) or not np.isfinite(p).all():
            return "goal: expected a finite (x, y, z)"
        self.goal = (float(msg.get("stamp", now)), p)
        return None

    def on_obstacles(self, boxes: list[dict]) -> str | None:
        arr = np.array([[*b["center"], *(0.5 * np.asarray(b["size"], np.float64))] for b in boxes],
                       np.float32).reshape(-1, 6)
        if not np.isfinite(arr).all() or (arr[:, 3:] <= 0).any():
            return "obstacles: expected finite centres and positive sizes"
        if arr.shape != self.obstacles.shape or not np.allclose(arr, self.obstacles):
            self.obstacles = arr
            self.reset(self.cfg.seed)  # a new scene: the policy plans around the new boxes
        return None

    def on_instruction(self, text: str) -> str | None:
        if not isinstance(text, str) or not text.strip():
            return "instruction: empty"
        changed = bool(self.instruction) and text.strip() != self.instruction
        self.instruction = text.strip()
        if changed:  # a new job: the policy starts it afresh
            self.reset()
        return None

    # ---- services ------------------------------------------------------------------------------
    def start(self) -> str:
        self.started, self.held_by_service = True, False
        return "started"

    def hold(self) -> str:
        self.held_by_service = True
        return "holding until start"

    def reset(self, seed: int | None = None) -> str:
        self.policy.reset(self.cfg.seed if seed is None else seed, self.scene())
        return "policy reset"

    def scene(self) -> Scene:
        low, high = -np.ones(5, np.float32), np.ones(5, np.float32)
        return Scene(self.task_cfg.task, low, high, self.obstacles.copy(), self.scale)

    # ---- decisions ---------------------------------------------------------------------------
    def stale(self, now: float) -> str | None:
        """Why the inputs cannot be acted on now, or None."""
        if self.joints is None:
            return "no joint state yet"
        age = now - self.joints["received"]
        if age > self.cfg.stale_after:
            return f"joint states stale ({age * 1000:.0f} ms since the last)"
        for cam in self.cameras:
            if cam not in self.images:
                return f"no {cam} image yet"
            age = now - self.images[cam][0]
            if age > self.cfg.stale_after:
                return f"{cam} image stale ({age * 1000:.0f} ms old)"
        if self.needs_objects and (self.objects is None or self.goal is None):
            return "no object and goal poses yet (the policy imagines from them)"
        if not self.instruction:
            return "no instruction yet"
        return None

    def observation(self) -> dict[str, Any]:
        """The policy's observation from the kept inputs (the simulator's layout)."""
        import torch

        j = self.joints
        q = torch.as_tensor(j["q"], dtype=torch.float32)[None]
        tcp, rot, _ = self.kin.tool(q)
        rot = rot[0].double().numpy()
        proprio = np.concatenate((j["q"], j["dq"], [j["fingers"].sum()], tcp[0].double().numpy(), quat_of(rot)))
        n = max(1, self.task_cfg.num_distractors + 1) if self.objects is None else len(self.objects[1]) // 7
        obs = {"proprio": proprio.astype(np.float32),
               "objects": self.objects[1] if self.objects is not None else np.tile(
                   np.array([0, 0, 0, 1, 0, 0, 0], np.float32), n),
               "goal": self.goal[1] if self.goal is not None else np.zeros(3, np.float32),
               "instruction": self.instruction}
        for cam in self.cameras:
            obs[f"image_{cam}"] = self.images[cam][1]
        return obs

    def decide(self, now: float) -> Decision:
        """Answer the last accepted joint state: the policy's chunk as a trajectory, or a hold."""
        t0 = time.perf_counter()
        answers = self.joints["stamp"] if self.joints is not None else 0.0
        if not self.started or self.held_by_service:
            return self._hold("holding: waiting for the start service" if not self.started
                              else "holding: the hold service was called", now, answers)
        why = self.stale(now)
        if why:
            return self._hold(f"holding: {why}", now, answers)
        try:
            obs = self.observation()
            if not self.warm:  # the first calls compile and allocate (seconds): that answer is late, so dropped
                self.warm = True
                # and the paths a policy takes only sometimes (vla+imagine's MPC refinement)
                getattr(self.policy, "warm_up", self.policy.act)(obs)
                self.reset()
                return self._hold("holding: the policy warmed up on this state; it acts from the next", now, answers)
            chunk = np.asarray(self.policy.act(obs), np.float64).reshape(-1, 5)
        except Exception as e:  # a policy that fails must not move the arm
            return self._hold(f"holding: the policy failed: {type(e).__name__}: {e}", now, answers)
        info = getattr(self.policy, "last_info", {}) or {}
        if str(info.get("reason", "")).startswith("holding"):
            return self._hold(info["reason"], now, answers)
        if not np.isfinite(chunk).all():
            return self._hold("holding: the policy answered non-finite actions", now, answers)
        traj = self.to_joints(chunk, now)
        bad = check_trajectory(traj, self.q_lo, self.q_hi, self.v_max, self.cfg.finger_max)
        if bad:
            return self._hold(f"holding: refused an unsafe trajectory: {bad}", now, answers)
        spent = time.perf_counter() - t0
        if spent > self.cfg.deadline:
            return self._hold(f"holding: the decision took {spent * 1000:.0f} ms, over the "
                              f"{self.cfg.deadline * 1000:.0f} ms deadline", now, answers)
        self.last_hold_reason = ""
        return Decision(traj, False, str(info.get("reason", "acting")), answers, spent, *_imagined(info))

    def watchdog(self, now: float) -> Decision | None:
        """At the control rate: a hold when the inputs went stale while acting, else None."""
        if not self.started or self.held_by_service:
            return None
        why = self.stale(now)
        return self._hold(f"holding: {why}", now, 0.0) if why else None

    def to_joints(self, chunk: np.ndarray, stamp: float) -> Trajectory:
        """End-effector actions (n, 5) -> joint targets at the control rate, by the simulator's
        IK and step limits from the measured joints, then clamped to the configured limits."""
        import torch

        q = self.joints["q"].astype(np.float64)
        pos, vel = [], []
        for a in chunk:
            tcp, rot, jac = (x[0].double().numpy() for x in self.kin.tool(torch.as_tensor(q, dtype=torch.float32)[None]))
            target = self.controller.command(np.clip(a, -1, 1), q, tcp, rot, jac)
            nxt = np.clip(target[:7], np.maximum(self.q_lo, q - self.v_max * self.dt),
                          np.minimum(self.q_hi, q + self.v_max * self.dt))
            fingers = np.clip(target[7:9], 0.0, self.cfg.finger_max)
            vel.append(np.concatenate(((nxt - q) / self.dt, [0.0, 0.0])))
            pos.append(np.concatenate((nxt, fingers)))
            q = nxt
        n = len(pos)
        return Trajectory(self.names, np.array(pos), np.array(vel), self.dt * np.arange(1, n + 1), stamp)

    def _hold(self, reason: str, now: float, answers: float) -> Decision:
        self.last_hold_reason = reason
        if self.joints is None:
            return Decision(None, True, reason, answers)
        q = np.clip(self.joints["q"], self.q_lo, self.q_hi)
        f = np.clip(self.joints["fingers"], 0.0, self.cfg.finger_max)
        traj = Trajectory(self.names, np.concatenate((q, f))[None], np.zeros((1, 9)), np.array([self.dt]), now)
        return Decision(traj, True, reason, answers)


def check_trajectory(t: Trajectory, q_lo, q_hi, v_max, finger_max: float) -> str | None:
    """Why a trajectory must not be sent (non-finite, outside the limits), or None."""
    p, v = t.positions, t.velocities
    if p.shape[1:] != (9,) or v.shape != p.shape or len(t.times) != len(p) or not len(p):
        return f"shape {p.shape}"
    if not (np.isfinite(p).all() and np.isfinite(v).all() and np.isfinite(t.times).all()):
        return "non-finite value"
    eps = 1e-9
    if (p[:, :7] < q_lo - eps).any() or (p[:, :7] > q_hi + eps).any():
        return "joint position outside its limits"
    if (np.abs(v[:, :7]) > v_max + 1e-6).any():
        return "joint velocity over its limit"
    if (p[:, 7:] < -eps).any() or (p[:, 7:] > finger_max + eps).any():
        return "finger position outside [0, finger_max]"
    return None


def _imagined(info: dict) -> tuple[dict, dict]:
    im = info.get("imagined")
    if not im:
        return {}, {}
    choice = info.get("choice")
    out = {"paths": np.asarray(im["tool"]), "success": np.asarray(im["success"]).max(-1),
           "grasp": np.asarray(im["grasp"]).max(-1), "collision": np.asarray(im["collision"]).max(-1),
           "chosen": -1 if choice is None else int(choice)}
    outcome = {}
    if choice is not None and 0 <= choice < len(out["success"]):
        outcome = {k: float(out[k][choice]) for k in ("success", "grasp", "collision")}
    return out, outcome
