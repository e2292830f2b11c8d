"""The bridge's typed config: topics, joint names, rates, limits and safety timeouts.

Importable without ROS. ``robotworld bridge --config bridge.yaml`` fills it from YAML (see
``configs/bridge.yaml``); flags override the file. Topic names are remappable the ROS way too
(``--ros-args -r /joint_states:=/franka/joint_states``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sims import robot

PANDA_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
PANDA_FINGERS = ("panda_finger_joint1", "panda_finger_joint2")


@dataclass
class BridgeConfig:
    """One bridge node."""

    policy: str = "mpc-fast"
    """Registered policy that decides (vla+imagine, mpc-fast, expert is refused: it reads the simulator)."""
    task: str = "reach"
    """Task whose instruction, objects and success the policy works towards."""
    device: str = "auto"
    """Where the policy's models run: auto, cpu or cuda."""
    seed: int = 0
    """The policy's seed (each reset restarts its draws from it)."""
    sim: bool = False
    """Also drive robotworld's MuJoCo arm and publish its joint states, images and object poses."""
    record: str = ""
    """MCAP file that receives every message in and out ('' = none)."""
    autostart: bool = False
    """Act as soon as the inputs are there (otherwise wait for the start service)."""
    control_hz: float = 20.0
    """Rate of the trajectory's points and of the watchdog (the simulator's control rate)."""
    stale_after: float = 0.2
    """Seconds after which a joint state or image is stale: the node holds."""
    deadline: float = 0.1
    """Seconds a decision may take from the joint state it answers; a later one is dropped for a hold."""
    replan_every: int = 1
    """Decide on every N-th accepted joint state (1: every one)."""
    localhost_only: bool = True
    """Bind discovery to this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) unless false."""
    joint_names: tuple[str, ...] = PANDA_JOINTS
    """The arm's seven joints, in kinematic order, as /joint_states names them (matched by name)."""
    finger_names: tuple[str, ...] = PANDA_FINGERS
    """The two finger joints (their positions are the opening; commanded in the trajectory)."""
    position_min: tuple[float, ...] = tuple(float(x) for x in robot.Q_MIN)
    """Lower joint position limits (rad), one per arm joint."""
    position_max: tuple[float, ...] = tuple(float(x) for x in robot.Q_MAX)
    """Upper joint position limits (rad)."""
    velocity_max: tuple[float, ...] = tuple(float(x) for x in robot.DQ_MAX)
    """Joint velocity limits (rad/s)."""
    finger_max: float = float(robot.FINGER_MAX)
    """Largest finger joint position (m)."""
    joint_states_topic: str = "/joint_states"
    trajectory_topic: str = "/arm_controller/joint_trajectory"
    front_image_topic: str = "/camera/front/image_raw"
    wrist_image_topic: str = "/camera/wrist/image_raw"
    objects_topic: str = "/robotworld/objects"
    """geometry_msgs/PoseArray: the target object first, then the others."""
    goal_topic: str = "/robotworld/goal"
    """geometry_msgs/PoseStamped: the zone (or goal point)."""
    obstacles_topic: str = "/robotworld/obstacles"
    """visualization_msgs/MarkerArray of CUBE markers: pose and full sizes (m), axis-aligned."""
    instruction_topic: str = "/robotworld/instruction"
    diagnostics_topic: str = "/diagnostics"
    markers_topic: str = "/robotworld/imagined"
    frame_id: str = "world"
    """Frame of the poses the node reads and the markers it publishes."""
    extra: dict = field(default_factory=dict)
    """Task config overrides for --sim (e.g. num_obstacles: 3)."""

    def check(self) -> None:
        """A ValueError naming the first field that cannot work."""
        n = len(self.joint_names)
        if n != 7 or len(set(self.joint_names)) != 7:
            raise ValueError(f"joint_names {list(self.joint_names)}: expected seven distinct names, in kinematic order")
        if len(self.finger_names) != 2 or set(self.finger_names) & set(self.joint_names):
            raise ValueError(f"finger_names {list(self.finger_names)}: expected two names apart from the arm's")
        for name in ("position_min", "position_max", "velocity_max"):
            v = getattr(self, name)
            if len(v) != 7:
                raise ValueError(f"{name} has {len(v)} values: expected 7, one per arm joint")
        if any(lo >= hi for lo, hi in zip(self.position_min, self.position_max)):
            raise ValueError("position_min must be below position_max for every joint")
        if any(v <= 0 for v in self.velocity_max):
            raise ValueError("velocity_max must be positive for every joint")
        for name in ("control_hz", "stale_after", "deadline"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} = {getattr(self, name)}: expected a positive number")
        if self.replan_every < 1:
            raise ValueError(f"replan_every = {self.replan_every}: expected at least 1")
