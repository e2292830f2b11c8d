"""The rclpy transport of the bridge: ROS 2 messages <-> ``BridgeCore`` (``robotworld bridge``).

Subscribes to joint states, the two cameras, object and zone poses, obstacle markers and the
instruction; publishes each decision as a JointTrajectory (its header stamp is the stamp of the
joint state it answers, so a controller and a latency probe can match them), diagnostics with the
imagined outcome and the reason for any hold, and the imagined tool paths as a MarkerArray.
Services (std_srvs/Trigger): ``~/start``, ``~/hold``, ``~/reset``. With ``--sim`` a second node
plays the MuJoCo arm as a driver and a perception module would. Needs the ``ros2`` extra.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from robotworld.ros.config import BridgeConfig

NODE_NAME = "robotworld_bridge"


def _seconds(stamp) -> float:
    return stamp.sec + 1e-9 * stamp.nanosec


def _stamp(msg_stamp, t: float) -> None:
    msg_stamp.sec = int(t)
    msg_stamp.nanosec = int(round((t - int(t)) * 1e9)) % 1_000_000_000


def bind_localhost(cfg: BridgeConfig) -> None:
    """Discovery on this host only (unless the config or the environment says otherwise)."""
    if cfg.localhost_only:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


class BridgeNode:
    """The bridge as an rclpy node around a ``BridgeCore``; ``node`` is the rclpy Node."""

    def __init__(self, cfg: BridgeConfig, core, recorder=None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseArray, PoseStamped
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory
        from visualization_msgs.msg import MarkerArray

        self.cfg, self.core, self.recorder = cfg, core, recorder
        self.node = n = Node(NODE_NAME)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_traj = n.create_publisher(JointTrajectory, cfg.trajectory_topic, 10)
        self.pub_diag = n.create_publisher(DiagnosticArray, cfg.diagnostics_topic, 10)
        self.pub_markers = n.create_publisher(MarkerArray, cfg.markers_topic, 10)
        n.create_subscription(JointState, cfg.joint_states_topic, self._joint_state, 10)
        topics = {"front": cfg.front_image_topic, "wrist": cfg.wrist_image_topic}
        for cam in core.cameras:
            n.create_subscription(Image, topics[cam], lambda m, c=cam: self._image(c, m), 2)
        n.create_subscription(PoseArray, cfg.objects_topic, self._objects, 10)
        n.create_subscription(PoseStamped, cfg.goal_topic, self._goal, latched)
        n.create_subscription(MarkerArray, cfg.obstacles_topic, self._obstacles, latched)
        n.create_subscription(String, cfg.instruction_topic, self._instruction, latched)
        for name, fn in (("start", core.start), ("hold", core.hold), ("reset", core.reset)):
            n.create_service(Trigger, f"~/{name}", lambda req, res, f=fn, k=name: self._service(k, f, req, res))
        n.create_timer(1.0 / cfg.control_hz, self._watchdog)
        self.lock = threading.Lock()
        self.since_decision = 0
        self.latencies: list[float] = []
        self.published = 0
        self.holds = 0
        self.last_diag = 0.0
        n.get_logger().info(f"robotworld bridge: policy {cfg.policy} on {cfg.task}, "
                            f"{'acting' if core.started else 'waiting for ~/start'}")

    def now(self) -> float:
        return _seconds(self.node.get_clock().now().to_msg())

    def _record(self, topic: str, msg) -> None:
        if self.recorder is not None:
            self.recorder.write(topic, msg)

    # ---- inputs ------------------------------------------------------------------------------
    def _joint_state(self, msg) -> None:
        self._record(self.cfg.joint_states_topic, msg)
        now = self.now()
        d = {"stamp": _seconds(msg.header.stamp), "name": list(msg.name), "position": list(msg.position),
             "velocity": list(msg.velocity)}
        with self.lock:
            why = self.core.on_joint_state(d, now)
            if why:
                self.node.get_logger().warning(f"joint state rejected: {why}")
                self._diagnostics(f"joint state rejected: {why}", None, force=True)
                return
            self.since_decision += 1
            if self.since_decision < self.cfg.replan_every:
                return
            self.since_decision = 0
            self._publish(self.core.decide(self.now()), msg.header.stamp)

    def _image(self, camera: str, msg) -> None:
        self._record(self.cfg.front_image_topic if camera == "front" else self.cfg.wrist_image_topic, msg)
        why = self.core.on_image(camera, {"stamp": _seconds(msg.header.stamp), "height": msg.height,
                                          "width": msg.width, "encoding": msg.encoding, "data": msg.data},
                                 self.now())
        if why:
            self.node.get_logger().warning(f"image rejected: {why}", throttle_duration_sec=2.0)

    def _objects(self, msg) -> None:
        self._record(self.cfg.objects_topic, msg)
        poses = [(p.position.x, p.position.y, p.position.z, p.orientation.x, p.orientation.y, p.orientation.z,
                  p.orientation.w) for p in msg.poses]
        self.core.on_objects({"stamp": _seconds(msg.header.stamp), "poses": poses}, self.now())

    def _goal(self, msg) -> None:
        self._record(self.cfg.goal_topic, msg)
        p = msg.pose.position
        self.core.on_goal({"stamp": _seconds(msg.header.stamp), "position": (p.x, p.y, p.z)}, self.now())

    def _obstacles(self, msg) -> None:
        self._record(self.cfg.obstacles_topic, msg)
        boxes = [{"center": (m.pose.position.x, m.pose.position.y, m.pose.position.z),
                  "size": (m.scale.x, m.scale.y, m.scale.z)} for m in msg.markers if m.type == 1]  # CUBE
        with self.lock:
            why = self.core.on_obstacles(boxes)
        if why:
            self.node.get_logger().warning(why)

    def _instruction(self, msg) -> None:
        self._record(self.cfg.instruction_topic, msg)
        why = self.core.on_instruction(msg.data)
        if why:
            self.node.get_logger().warning(why)

    def _service(self, name: str, fn, req, res):
        with self.lock:
            res.message = fn()
            res.success = True
            if name in ("hold", "reset"):
                self._publish(self.core._hold(f"holding: the {name} service was called", self.now(), 0.0))
        self.node.get_logger().info(f"~/{name}: {res.message}")
        return res

    def _watchdog(self) -> None:
        with self.lock:
            d = self.core.watchdog(self.now())
            if d is not None:
                self._publish(d)

    # ---- outputs -----------------------------------------------------------------------------
    def _publish(self, d, answers_stamp=None) -> None:
        """answers_stamp: the answered joint state's own stamp message, copied exactly (a float
        round trip would change its nanoseconds, and a probe could no longer match them)."""
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        if d.trajectory is not None:
            t = d.trajectory
            msg = JointTrajectory()
            if answers_stamp is not None and d.answers:
                msg.header.stamp = answers_stamp
            else:
                _stamp(msg.header.stamp, d.answers or t.stamp)
            msg.header.frame_id = self.cfg.frame_id
            msg.joint_names = list(t.joint_names)
            for p, v, s in zip(t.positions, t.velocities, t.times):
                pt = JointTrajectoryPoint()
                pt.positions, pt.velocities = [float(x) for x in p], [float(x) for x in v]
                pt.time_from_start = Duration(sec=int(s), nanosec=int(round((s - int(s)) * 1e9)))
                msg.points.append(pt)
            self.pub_traj.publish(msg)
            self._record(self.cfg.trajectory_topic, msg)
            self.published += 1
            if d.answers:
                self.latencies.append(self.now() - d.answers)
        if d.held:
            self.holds += 1
            self.node.get_logger().info(d.reason, throttle_duration_sec=1.0)
        self._diagnostics(d.reason, d, force=d.held)
        if d.imagined:
            self._markers(d.imagined)

    def _diagnostics(self, reason: str, d, force: bool = False) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        now = self.now()
        if not force and now - self.last_diag < 0.2:  # at most 5 Hz while all is well
            return
        self.last_diag = now
        st = DiagnosticStatus(name=NODE_NAME, hardware_id=self.cfg.policy, message=reason[:200])
        st.level = DiagnosticStatus.WARN if (d is None or d.held) else DiagnosticStatus.OK
        values = {"policy": self.cfg.policy, "task": self.cfg.task, "held": str(d is None or d.held).lower(),
                  "decision_ms": f"{d.decision_s * 1000:.2f}" if d is not None else "",
                  "accepted_joint_states": str(self.core.accepted),
                  "rejected_joint_states": str(sum(self.core.rejected.values()))}
        if d is not None:
            values.update({f"predicted_{k}": f"{v:.3f}" for k, v in d.outcome.items()})
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[st])
        _stamp(msg.header.stamp, now)
        self.pub_diag.publish(msg)
        self._record(self.cfg.diagnostics_topic, msg)

    def _markers(self, im: dict) -> None:
        from geometry_msgs.msg import Point
        from visualization_msgs.msg import Marker, MarkerArray

        out = MarkerArray()
        for k, path in enumerate(np.asarray(im["paths"])):
            m = Marker(type=Marker.LINE_STRIP, action=Marker.ADD, id=k, ns="imagined")
            m.header.frame_id = self.cfg.frame_id
            chosen = k == im.get("chosen", -1)
            m.scale.x = 0.006 if chosen else 0.002
            # the outcome's colour: red for a collision, green for a held grasp or success, grey else
            col = (1.0, 0.1, 0.1) if im["collision"][k] > 0.5 else (0.1, 0.9, 0.2) if max(
                im["success"][k], im["grasp"][k]) > 0.5 else (0.7, 0.7, 0.7)
            m.color.r, m.color.g, m.color.b, m.color.a = (*((0.1, 0.4, 1.0) if chosen else col), 1.0 if chosen else 0.6)
            m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in path]
            m.pose.orientation.w = 1.0
            out.markers.append(m)
        self.pub_markers.publish(out)
        self._record(self.cfg.markers_topic, out)


class SimDriverNode:
    """robotworld's MuJoCo arm on ROS: joint states, camera images, object and zone poses,
    obstacle markers and the instruction out; the trajectory topic in."""

    def __init__(self, cfg: BridgeConfig, arm, recorder=None, on_episode=None) -> None:
        from geometry_msgs.msg import PoseArray, PoseStamped
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory
        from visualization_msgs.msg import MarkerArray

        self.cfg, self.arm, self.recorder, self.on_episode = cfg, arm, recorder, on_episode
        self.node = n = Node("robotworld_sim_arm")
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_js = n.create_publisher(JointState, cfg.joint_states_topic, 10)
        self.pub_img = {c: n.create_publisher(Image, t, 2) for c, t in
                        (("front", cfg.front_image_topic), ("wrist", cfg.wrist_image_topic))}
        self.pub_obj = n.create_publisher(PoseArray, cfg.objects_topic, 10)
        self.pub_goal = n.create_publisher(PoseStamped, cfg.goal_topic, latched)
        self.pub_obst = n.create_publisher(MarkerArray, cfg.obstacles_topic, latched)
        self.pub_text = n.create_publisher(String, cfg.instruction_topic, latched)
        n.create_subscription(JointTrajectory, cfg.trajectory_topic, self._trajectory, 10)
        self.lock = threading.Lock()
        self.episode_log: list[dict[str, Any]] = []
        self._episode_start()
        n.create_timer(1.0 / cfg.control_hz, self._tick)

    def now(self) -> float:
        return _seconds(self.node.get_clock().now().to_msg())

    def _trajectory(self, msg) -> None:
        index = {name: i for i, name in enumerate(msg.joint_names)}
        names = self.arm.names
        if set(names) - set(index) or not msg.points:
            return
        pos = np.array([[p.positions[index[k]] for k in names] for p in msg.points])
        times = np.array([p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec for p in msg.points])
        with self.lock:
            self.arm.command(times, pos, _seconds(msg.header.stamp))

    def _episode_start(self) -> None:
        from geometry_msgs.msg import PoseStamped
        from std_msgs.msg import String
        from visualization_msgs.msg import Marker, MarkerArray

        now = self.now()
        ma = MarkerArray()
        for k, b in enumerate(self.arm.obstacles()):
            m = Marker(type=Marker.CUBE, action=Marker.ADD, id=k, ns="obstacles")
            m.header.frame_id = self.cfg.frame_id
            m.pose.position.x, m.pose.position.y, m.pose.position.z = b["center"]
            m.pose.orientation.w = 1.0
            m.scale.x, m.scale.y, m.scale.z = b["size"]
            m.color.r = m.color.g = m.color.b = 0.5
            m.color.a = 1.0
            ma.markers.append(m)
        if not ma.markers:  # an empty scene still says so (DELETEALL), so the bridge clears old boxes
            ma.markers.append(Marker(action=Marker.DELETEALL))
        goal = PoseStamped()
        _stamp(goal.header.stamp, now)
        goal.header.frame_id = self.cfg.frame_id
        goal.pose.position.x, goal.pose.position.y, goal.pose.position.z = self.arm.goal(now)["position"]
        goal.pose.orientation.w = 1.0
        for pub, msg, topic in ((self.pub_obst, ma, self.cfg.obstacles_topic), (self.pub_goal, goal, self.cfg.goal_topic),
                                (self.pub_text, String(data=self.arm.instruction()), self.cfg.instruction_topic)):
            pub.publish(msg)
            if self.recorder is not None:
                self.recorder.write(topic, msg)

    def _tick(self) -> None:
        from geometry_msgs.msg import Pose, PoseArray
        from sensor_msgs.msg import Image, JointState

        with self.lock:
            ended = self.arm.step(self.now())
        if ended:
            self.episode_log.append({"episode": self.arm.episodes, "outcome": self.arm.done_reason})
            self.node.get_logger().info(f"sim episode {self.arm.episodes}: {self.arm.done_reason} "
                                        f"({self.arm.successes}/{self.arm.episodes} so far)")
            self._episode_start()
            if self.on_episode is not None:  # what an operator's reset call does between two episodes
                self.on_episode(self.arm.seed + self.arm.episodes)
        now = self.now()
        js = self.arm.joint_state(now)
        m = JointState(name=js["name"], position=js["position"], velocity=js["velocity"])
        _stamp(m.header.stamp, now)
        out = [(self.pub_js, m, self.cfg.joint_states_topic)]
        for cam, im in self.arm.images(now).items():
            img = Image(height=im["height"], width=im["width"], encoding="rgb8", step=3 * im["width"], data=im["data"])
            _stamp(img.header.stamp, now)
            out.append((self.pub_img[cam], img, self.cfg.front_image_topic if cam == "front" else self.cfg.wrist_image_topic))
        pa = PoseArray()
        _stamp(pa.header.stamp, now)
        pa.header.frame_id = self.cfg.frame_id
        for p in self.arm.objects(now)["poses"]:
            pose = Pose()
            pose.position.x, pose.position.y, pose.position.z = p[:3]
            pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = p[3:]
            pa.poses.append(pose)
        out.append((self.pub_obj, pa, self.cfg.objects_topic))
        for pub, msg, topic in out[1:] + out[:1]:  # the joint state last: the bridge decides on it
            pub.publish(msg)
            if self.recorder is not None:
                self.recorder.write(topic, msg)


def run(cfg: BridgeConfig, ros_args: list[str] | None = None, duration: float = 0.0,
        status_file: str = "") -> dict[str, Any]:
    """Run the bridge (and with cfg.sim the simulated arm) until Ctrl-C or ``duration`` seconds;
    returns a summary (decisions, holds, latency percentiles, sim episodes)."""
    import json
    import signal

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    import sims
    from policies import make_policy
    from robotworld.ros.core import BridgeCore

    cfg.check()
    if cfg.policy in ("expert", "noisy-expert", "fumbling-expert"):
        raise ValueError(f"policy {cfg.policy!r} reads the simulator's state: it cannot drive an arm through ROS")
    bind_localhost(cfg)
    policy = make_policy(cfg.policy, seed=cfg.seed, device=cfg.device)
    task_cfg = sims.make_config(cfg.task, **cfg.extra)
    core = BridgeCore(cfg, policy, task_cfg)
    recorder = None
    if cfg.record:
        from robotworld.paths import writable_file
        from robotworld.ros.record import Recorder

        recorder = Recorder(str(writable_file(cfg.record, "MCAP recording")))
    rclpy.init(args=["--ros-args", *(ros_args or [])] if ros_args else None)
    executor = SingleThreadedExecutor()
    bridge = BridgeNode(cfg, core, recorder)
    executor.add_node(bridge.node)
    sim = None
    if cfg.sim:
        from robotworld.ros.simarm import SimArm

        arm = SimArm(cfg.task, core.cameras, core.image_size, cfg.seed, cfg.joint_names, cfg.finger_names, cfg.extra)
        def new_episode(seed: int) -> None:
            with bridge.lock:
                core.reset(seed)

        sim = SimDriverNode(cfg, arm, recorder, new_episode)
        executor.add_node(sim.node)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *a: stop.set())
    # spun in this thread: the simulated cameras' GL context belongs to the thread that made it
    t0 = last_status = time.monotonic()
    try:
        while not stop.is_set() and (not duration or time.monotonic() - t0 < duration):
            executor.spin_once(timeout_sec=0.05)
            if status_file and time.monotonic() - last_status > 0.2:
                _write_status(status_file, bridge, sim)
                last_status = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        executor.shutdown()
        summary = summarise(bridge, sim)
        bridge.node.destroy_node()
        if sim is not None:
            sim.node.destroy_node()
        if recorder is not None:
            recorder.close()
            summary["recorded_messages"] = recorder.count
        rclpy.try_shutdown()
    if status_file:
        _write_status(status_file, bridge, sim, summary)
    return json.loads(json.dumps(summary))


def summarise(bridge: BridgeNode, sim) -> dict[str, Any]:
    lat = np.array(bridge.latencies) * 1000
    out = {"policy": bridge.cfg.policy, "task": bridge.cfg.task, "trajectories": bridge.published,
           "holds": bridge.holds, "accepted_joint_states": bridge.core.accepted,
           "rejected_joint_states": dict(bridge.core.rejected),
           "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
           "latency_ms_p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None}
    if sim is not None:
        out.update(sim_episodes=sim.arm.episodes, sim_successes=sim.arm.successes)
    return out


def _write_status(path: str, bridge: BridgeNode, sim, summary: dict | None = None) -> None:
    import json

    data = summary or summarise(bridge, sim)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
