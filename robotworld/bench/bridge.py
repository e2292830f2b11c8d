"""The bridge under load (``robotworld bench bridge``): a second process publishes joint states at
20 Hz to a running ``robotworld bridge`` for a set time and times each answer.

The probe (this process) publishes what an arm and a perception module would: joint states, the
object and zone poses, the instruction, and the two camera frames when the policy sees them (real
MuJoCo frames of the task's first episode). Each trajectory's header stamp names the joint state
it answers, so the latency is from the probe's publish to its receipt of that answer, over DDS on
loopback both ways. Reported: latency percentiles, joint states answered, lost (never answered
after the warm-up) and duplicated (answered twice), the bridge's resident memory at the start and
the end, and how long after its inputs went stale the hold arrived. The ``zero`` policy (answers
at once) gives the same-run transport reference.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class BridgeBenchConfig:
    """Latency, loss and memory of the bridge node under a 20 Hz joint-state stream."""

    policy: str = "mpc-fast"
    """Policy the bridge runs (comma-free name; several: run the bench once each)."""
    task: str = "reach"
    """Task the bridge acts on."""
    seconds: float = 60.0
    """How long the probe publishes after the warm-up (the issue's figure: 600)."""
    warmup: float = 5.0
    """Seconds of answers not counted at the start (the policy compiles and warms up)."""
    rate: float = 20.0
    """Joint states per second."""
    reference: bool = True
    """Also run the zero policy for min(seconds, 20) s: the transport's own latency."""
    device: str = "cpu"
    """Where the bridge's policy runs."""


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Probe:
    """The arm's side of the bench, in its own rclpy context."""

    def __init__(self, task: str, rate: float, cameras: bool) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Pose, PoseArray, PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        import sims
        from sims import robot

        env = sims.make(task, cameras=("front", "wrist") if cameras else (), image_size=(64, 64))
        self.obs, _ = env.reset(seed=0)
        env.close()
        self.rclpy = rclpy
        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        self.node = n = rclpy.create_node("robotworld_bridge_probe", context=self.ctx)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_js = n.create_publisher(JointState, "/joint_states", 10)
        self.pub_obj = n.create_publisher(PoseArray, "/robotworld/objects", 10)
        self.pub_img = {c: n.create_publisher(Image, f"/camera/{c}/image_raw", 2) for c in ("front", "wrist")}
        goal = PoseStamped()
        goal.pose.position.x, goal.pose.position.y, goal.pose.position.z = map(float, self.obs["goal"])
        n.create_publisher(PoseStamped, "/robotworld/goal", latched).publish(goal)
        n.create_publisher(String, "/robotworld/instruction", latched).publish(String(data=self.obs["instruction"]))
        self.types = {"JointState": JointState, "Pose": Pose, "PoseArray": PoseArray, "Image": Image}
        self.cameras = cameras
        self.q = [*map(float, robot.HOME_Q), 0.02, 0.02]
        self.names = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]
        self.sent: dict[int, float] = {}
        self.answers: dict[int, list[float]] = {}
        self.holds: list[tuple[float, str]] = []
        self.publishing = True
        self.lock = threading.Lock()
        n.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", self._answer, 50)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 50)
        n.create_timer(1.0 / rate, self._tick)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _tick(self) -> None:
        if not self.publishing:
            return
        T = self.types
        stamp = self.node.get_clock().now().to_msg()
        if self.cameras:
            for cam in ("front", "wrist"):
                img = self.obs[f"image_{cam}"]
                m = T["Image"](height=img.shape[0], width=img.shape[1], encoding="rgb8", step=3 * img.shape[1],
                               data=img.tobytes())
                m.header.stamp = stamp
                self.pub_img[cam].publish(m)
        pa = T["PoseArray"]()
        pa.header.stamp = stamp
        for row in np.asarray(self.obs["objects"], np.float64).reshape(-1, 7):
            p = T["Pose"]()
            p.position.x, p.position.y, p.position.z = map(float, row[:3])
            p.orientation.w, p.orientation.x, p.orientation.y, p.orientation.z = map(float, row[3:])
            pa.poses.append(p)
        self.pub_obj.publish(pa)
        js = T["JointState"](name=self.names, position=self.q, velocity=[0.0] * 9)
        js.header.stamp = stamp
        key = stamp.sec * 1_000_000_000 + stamp.nanosec
        with self.lock:
            self.sent[key] = time.perf_counter()
        self.pub_js.publish(js)

    def _answer(self, msg) -> None:
        t = time.perf_counter()
        key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            if key in self.sent:
                self.answers.setdefault(key, []).append(t - self.sent[key])

    def _diag(self, msg) -> None:
        for s in msg.status:
            if "stale" in s.message:
                self.holds.append((time.perf_counter(), s.message))

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


def _one(cfg: BridgeBenchConfig, policy: str, seconds: float) -> dict:
    env = {**os.environ, "ROS_DOMAIN_ID": str(60 + os.getpid() % 40), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    proc = subprocess.Popen([sys.executable, "-m", "robotworld.cli", "bridge", "--policy", policy, "--task", cfg.task,
                             "--autostart", "--device", cfg.device, "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    cameras = policy.startswith("vla")
    probe = Probe(cfg.task, cfg.rate, cameras)
    try:
        end = time.monotonic() + 120
        while not probe.answers and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.1)
        if not probe.answers:
            raise RuntimeError(f"the bridge ({policy}) did not answer within 120 s")
        time.sleep(cfg.warmup)
        with probe.lock:
            first = max(probe.sent)  # count from here
        rss0, samples = _rss_mb(proc.pid), []
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:  # resident memory once a minute: a leak grows, a one-off steps
            time.sleep(min(60.0, max(0.0, t_end - time.monotonic())))
            samples.append(round(_rss_mb(proc.pid), 1))
        rss1 = samples[-1] if samples else _rss_mb(proc.pid)
        probe.publishing = False
        stopped = time.perf_counter()
        with probe.lock:
            last = max(probe.sent)
        time.sleep(1.0)
        with probe.lock:
            counted = [k for k in probe.sent if first < k <= last]
            lat = np.array([probe.answers[k][0] for k in counted if k in probe.answers]) * 1000
            lost = sum(k not in probe.answers for k in counted)
            dup = sum(len(probe.answers.get(k, [])) > 1 for k in counted)
        hold = [t for t, _ in probe.holds if t > stopped]
    finally:
        probe.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    summary = json.loads(out[out.index("{"):]) if "{" in out else {}
    return {"policy": policy, "seconds": seconds, "joint_states": len(counted), "answered": int(lat.size),
            "lost": int(lost), "duplicated": int(dup),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            "latency_ms_max": round(float(lat.max()), 2) if lat.size else None,
            "rss_mb_start": round(rss0, 1), "rss_mb_end": round(rss1, 1), "rss_mb_each_minute": samples,
            "hold_after_last_joint_state_ms": round((hold[0] - stopped) * 1000, 1) if hold else None,
            "bridge_holds": summary.get("holds"), "bridge_rejected": summary.get("rejected_joint_states")}


def bench_bridge(cfg: BridgeBenchConfig) -> dict:
    """The bridge's latency and loss under load, with the zero policy's as the reference."""
    try:
        import rclpy  # noqa: F401
    except ImportError as e:
        raise ValueError(f"robotworld bench bridge needs ROS 2's rclpy ({e}): pip install 'robotworld[ros2]'") from None
    if cfg.seconds <= 0 or cfg.rate <= 0:
        raise ValueError("seconds and rate must be positive")
    out = {"policy": _one(cfg, cfg.policy, cfg.seconds)}
    if cfg.reference:
        out["reference_zero_policy"] = _one(cfg, "zero", min(cfg.seconds, 20.0))
    out["stale_after_ms"] = 200.0
    out["period_ms"] = round(1000 / cfg.rate, 1)
    return out
