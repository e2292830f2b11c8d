"""The bridge node and a test client in separate processes over real ROS 2 (loopback discovery)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from sims import robot

rclpy = pytest.importorskip("rclpy", reason="the ros2 extra (make test installs it)")


def _loopback_multicast() -> bool:
    try:
        return bool(int(open("/sys/class/net/lo/flags").read(), 16) & 0x1000)  # IFF_MULTICAST
    except OSError:
        return True  # no sysfs: let discovery try


pytestmark = pytest.mark.skipif(not _loopback_multicast(), reason="DDS discovery between two processes needs "
                                "multicast on lo: `make test` enables it as root (ip link set lo multicast on)")

DOMAIN = str(40 + os.getpid() % 50)  # a domain of this run's own: parallel runs do not hear each other
ENV = {**os.environ, "ROS_DOMAIN_ID": DOMAIN, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
       "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
NAMES = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]


def _bridge(tmp_path, *args: str) -> tuple[subprocess.Popen, str]:
    status = str(tmp_path / "status.json")
    proc = subprocess.Popen([sys.executable, "-m", "robotworld.cli", "bridge", "--status-file", status, "--json",
                             "--device", "cpu", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    return proc, status


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return out


def _status(path: str) -> dict:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _wait(cond, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


class Client:
    """The arm's side: joint states at 20 Hz, poses and the instruction; trajectories and diagnostics in."""

    def __init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Pose, PoseArray, PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        os.environ.update({"ROS_DOMAIN_ID": DOMAIN, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})
        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        self.node = n = rclpy.create_node("bridge_test_client", context=self.ctx)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.js_pub = n.create_publisher(JointState, "/joint_states", 10)
        self.text = n.create_publisher(String, "/robotworld/instruction", latched)
        self.goal = n.create_publisher(PoseStamped, "/robotworld/goal", latched)
        self.objects = n.create_publisher(PoseArray, "/robotworld/objects", 10)
        self.trajectories: list = []
        self.diagnostics: list[str] = []
        self.sent: dict[float, float] = {}
        n.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory",
                              lambda m: self.trajectories.append((time.time(), m)), 10)
        n.create_subscription(DiagnosticArray, "/diagnostics",
                              lambda m: self.diagnostics.extend(s.message for s in m.status), 50)
        self.Pose, self.PoseArray, self.PoseStamped, self.JointState = Pose, PoseArray, PoseStamped, JointState
        self.String = String
        self.mode = "good"
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(n)
        n.create_timer(0.05, self._tick)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def publish_scene(self) -> None:
        g = self.PoseStamped()
        g.pose.position.x, g.pose.position.y, g.pose.position.z = 0.5, 0.1, 0.25
        self.goal.publish(g)
        self.text.publish(self.String(data="move the gripper to the red dot"))

    def _tick(self) -> None:
        if self.mode == "silent":
            return
        now = self.node.get_clock().now()
        pa = self.PoseArray()
        pa.header.stamp = now.to_msg()
        p = self.Pose()
        p.position.x, p.orientation.w = 0.5, 1.0
        pa.poses = [p]
        self.objects.publish(pa)
        m = self.JointState(name=list(NAMES), position=[*map(float, robot.HOME_Q), 0.02, 0.02], velocity=[0.0] * 9)
        m.header.stamp = now.to_msg()
        if self.mode == "nan":
            m.position[3] = float("nan")
        elif self.mode == "unknown":
            m.name[0] = "shoulder"
        stamp = m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec
        self.sent[round(stamp, 6)] = time.time()
        self.js_pub.publish(m)

    def answered(self) -> list[float]:
        """Latencies (s) of the trajectories that answer a joint state this client sent."""
        out = []
        for t, m in list(self.trajectories):
            key = round(m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec, 6)
            if key in self.sent:
                out.append(t - self.sent[key])
        return out

    def call(self, name: str) -> str:
        from std_srvs.srv import Trigger

        cli = self.node.create_client(Trigger, f"/robotworld_bridge/{name}")
        assert cli.wait_for_service(timeout_sec=20), f"no {name} service"
        fut = cli.call_async(Trigger.Request())
        assert _wait(fut.done, 20), f"{name} did not answer"
        return fut.result().message

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def client():
    c = Client()
    yield c
    c.close()


def test_joint_states_in_trajectories_out_and_bad_input_holds(client, tmp_path):
    proc, status = _bridge(tmp_path, "--policy", "mpc-fast", "--task", "reach", "--autostart", "--deadline", "0.5")
    try:
        client.publish_scene()
        assert _wait(lambda: len(client.answered()) >= 20, 90, proc), _stop(proc)
        lat = np.array(client.answered())
        assert np.median(lat) < 0.5, lat  # within the deadline the node was given
        last = client.trajectories[-1][1]
        assert list(last.joint_names) == NAMES and len(last.points) == 1
        q = np.array(last.points[0].positions[:7])
        assert (q >= robot.Q_MIN).all() and (q <= robot.Q_MAX).all()
        assert np.abs(q - robot.HOME_Q).max() <= robot.DQ_MAX.max() * 0.05 + 1e-6  # one control step

        for mode, words in (("nan", "non-finite values: panda_joint4"), ("unknown", "unknown joints: shoulder")):
            client.mode, n = mode, len(client.trajectories)
            assert _wait(lambda w=words: any(w in d for d in client.diagnostics), 10, proc), client.diagnostics[-5:]
            time.sleep(0.4)
            held = [m for _, m in client.trajectories[n:]]  # only the watchdog's holds, at the last good joints
            assert held and all(np.allclose(m.points[0].velocities, 0) for m in held[-3:])
            client.mode = "good"
            time.sleep(0.3)

        client.mode = "silent"
        t0 = time.time()
        assert _wait(lambda: any("joint states stale" in d for d in client.diagnostics[-5:]), 5, proc)
        assert time.time() - t0 < 0.2 + 0.05 + 0.3  # stale after 200 ms, held within a period (+ delivery)
        client.mode = "good"

        assert client.call("hold") == "holding until start"
        assert _wait(lambda: any("hold service" in d for d in client.diagnostics[-5:]), 5, proc)
        assert client.call("start") == "started"
        assert client.call("reset") == "policy reset"
    finally:
        out = _stop(proc)
    summary = _status(status)
    assert summary["rejected_joint_states"].get("non-finite values", 0) > 0, out
    assert summary["rejected_joint_states"].get("unknown joints", 0) > 0, out


@pytest.mark.parametrize("task,seconds", [("reach", 60), ("lift", 120)])
def test_sim_closes_the_loop_and_records_mcap(task, seconds, tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    rec = tmp_path / "run.mcap"
    proc, status = _bridge(tmp_path, "--sim", "--task", task, "--policy", "mpc-fast", "--autostart",
                           "--record", str(rec))
    try:
        ok = _wait(lambda: _status(status).get("sim_successes", 0) >= 1, seconds, proc)
    finally:
        out = _stop(proc)
    assert ok, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
    with open(rec, "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        topics = {channel.topic for _, channel, _, decoded in reader.iter_decoded_messages() if decoded is not None}
    assert {"/joint_states", "/arm_controller/joint_trajectory", "/diagnostics", "/robotworld/objects",
            "/robotworld/instruction"} <= topics, topics
