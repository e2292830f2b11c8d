"""One robot description: a 7-DoF arm with the Franka Panda's kinematics and limits.

Both the MJCF (MuJoCo) and the URDF (PyBullet) are generated from the data here, so the
two engines cannot drift apart. Kinematics follow the published modified Denavit-Hartenberg
parameters of the Panda; joint position, velocity and torque limits are the published
figures. Links are built from capsules and boxes so that collision checking stays cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Modified DH (Craig) rows (a_{i-1}, d_i, alpha_{i-1}) for joints 1..7 and the flange.
DH: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -math.pi / 2),
    (0.0, 0.316, math.pi / 2),
    (0.0825, 0.0, math.pi / 2),
    (-0.0825, 0.384, -math.pi / 2),
    (0.0, 0.0, math.pi / 2),
    (0.088, 0.0, math.pi / 2),
)
FLANGE_D = 0.107

Q_MIN = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
Q_MAX = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
DQ_MAX = np.array([2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100])
TAU_MAX = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
# Link masses (kg), from published identified inertial parameters, rounded.
LINK_MASS = (4.97, 0.65, 3.23, 3.59, 1.23, 1.67, 0.74)
HOME_Q = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
# Position-servo gains per joint (N m / rad).
KP = (4500.0, 4500.0, 3500.0, 3500.0, 2000.0, 2000.0, 2000.0)

FINGER_MAX = 0.04  # m per finger: 8 cm opening
FINGER_FORCE = 70.0  # N, continuous grasp force of the Franka hand
FINGER_KP = 800.0
HAND_MASS = 0.73
FINGER_MASS = 0.015
TCP_OFFSET = 0.1034  # hand frame origin to the point between the fingertips
HAND_YAW_OFFSET = -math.pi / 4

# contype / conaffinity bits: static world, arm links, task objects, fingers
BIT_STATIC, BIT_ARM, BIT_OBJECT, BIT_FINGER = 1, 2, 4, 8


@dataclass(frozen=True)
class Capsule:
    """A capsule between two points of a link frame."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    radius: float


def joint_origin(i: int) -> tuple[tuple[float, float, float], float]:
    """Origin of joint frame i+1 in the frame of link i, and the x-rotation alpha."""
    a, d, alpha = DH[i]
    return (a, -math.sin(alpha) * d, math.cos(alpha) * d), alpha


def _next_origin(i: int) -> tuple[float, float, float]:
    if i + 1 < len(DH):
        return joint_origin(i + 1)[0]
    return (0.0, 0.0, FLANGE_D)


@dataclass(frozen=True)
class RobotDescription:
    """Everything both generators need: kinematics, limits, collision primitives."""

    name: str = "panda"
    link_radius: tuple[float, ...] = (0.06, 0.06, 0.06, 0.055, 0.05, 0.05, 0.045)
    housing: tuple[float, ...] = (0.0, 0.06, 0.06, 0.06, 0.05, 0.05, 0.04)
    hand_half: tuple[float, float, float] = (0.025, 0.09, 0.028)
    finger_half: tuple[float, float, float] = (0.012, 0.008, 0.0275)
    finger_base_z: float = 0.0584
    link_capsules: tuple[tuple[Capsule, ...], ...] = field(init=False)

    def __post_init__(self) -> None:
        caps = []
        for i in range(7):
            r = self.link_radius[i]
            nxt = _next_origin(i)
            link = [Capsule((0.0, 0.0, 0.0), nxt, r)] if max(map(abs, nxt)) > 1e-6 else []
            if i == 0:  # link1 hangs below its joint frame down to the base
                link = [Capsule((0.0, 0.0, -0.19), (0.0, 0.0, 0.0), r)]
            if self.housing[i] > 0:
                h = self.housing[i]
                link.append(Capsule((0.0, 0.0, -h), (0.0, 0.0, h), r))
            caps.append(tuple(link))
        object.__setattr__(self, "link_capsules", tuple(caps))


PANDA = RobotDescription()


def _fmt(v) -> str:
    return " ".join(f"{float(x):.10g}" for x in v)


def _quat_x(alpha: float) -> tuple[float, float, float, float]:
    return (math.cos(alpha / 2), math.sin(alpha / 2), 0.0, 0.0)


def mjcf_arm(desc: RobotDescription = PANDA) -> str:
    """MJCF worldbody fragment of the arm and gripper, rooted at the world origin."""
    static = f'contype="0" conaffinity="{BIT_OBJECT}"'
    out = [
        '<body name="link0" pos="0 0 0">',
        f'<geom name="link0_c0" type="capsule" fromto="0 0 0.05 0 0 0.14" size="0.08" {static}/>',
    ]
    for i in range(7):
        pos, alpha = joint_origin(i)
        lim = f"{Q_MIN[i]:.4f} {Q_MAX[i]:.4f}"
        out.append(f'<body name="link{i + 1}" pos="{_fmt(pos)}" quat="{_fmt(_quat_x(alpha))}"'
                   ' gravcomp="1">')
        out.append(f'<joint name="joint{i + 1}" class="arm" range="{lim}"'
                   f' actuatorfrcrange="{-TAU_MAX[i]} {TAU_MAX[i]}"/>')
        caps = desc.link_capsules[i]
        mass = LINK_MASS[i] / len(caps)
        for k, c in enumerate(caps):
            out.append(f'<geom name="link{i + 1}_c{k}" class="arm" fromto="{_fmt(c.a + c.b)}"'
                       f' size="{c.radius}" mass="{mass:.4f}"/>')
    hq = (math.cos(HAND_YAW_OFFSET / 2), 0.0, 0.0, math.sin(HAND_YAW_OFFSET / 2))
    hx, hy, hz = desc.hand_half
    fx, fy, fz = desc.finger_half
    out.append(f'<body name="hand" pos="0 0 {FLANGE_D}" quat="{_fmt(hq)}" gravcomp="1">')
    out.append(f'<geom name="hand_c0" class="arm" type="box" size="{hx} {hy} {hz}"'
               f' pos="0 0 {hz}" mass="{HAND_MASS}"/>')
    out.append(f'<site name="tcp" pos="0 0 {TCP_OFFSET}" size="0.005" rgba="1 0 0 0" group="5"/>')
    out.append('<camera name="wrist" pos="0.06 0 0.03" xyaxes="0 1 0 0.95 0 0.3" fovy="75"/>')
    for side, sign in (("left", 1), ("right", -1)):
        out.append(f'<body name="finger_{side}" pos="0 0 {desc.finger_base_z}" gravcomp="1">')
        out.append(f'<joint name="finger_{side}" class="finger" axis="0 {sign} 0"/>')
        out.append(f'<geom name="finger_{side}" class="finger" size="{fx} {fy} {fz}"'
                   f' pos="0 {sign * fy} {fz}" mass="{FINGER_MASS}"/>')
        out.append("</body>")
    out.append("</body>")
    out.extend("</body>" for _ in range(7))
    out.append("</body>")
    return "\n".join(out)


def mjcf_defaults() -> str:
    """Default classes used by :func:`mjcf_arm`."""
    return f"""
<default class="arm">
  <joint axis="0 0 1" armature="0.1" damping="1"/>
  <geom type="capsule" contype="{BIT_ARM}" conaffinity="0" rgba="0.92 0.92 0.95 1" group="1"/>
</default>
<default class="finger">
  <joint type="slide" range="0 {FINGER_MAX}" armature="0.01" damping="10"
         actuatorfrcrange="-{FINGER_FORCE} {FINGER_FORCE}"/>
  <geom type="box" contype="{BIT_FINGER}" conaffinity="0" condim="4" friction="1.5 0.03 0.0001"
        solref="0.004 1" solimp="0.95 0.99 0.001" rgba="0.25 0.25 0.28 1" group="1"/>
</default>"""


def mjcf_actuators() -> str:
    """Position servos: the arm's joints at their published torque limits, the fingers at 70 N."""
    out = []
    for i in range(7):
        out.append(f'<position name="act{i + 1}" joint="joint{i + 1}" kp="{KP[i]}" dampratio="1"'
                   f' ctrlrange="{Q_MIN[i]:.4f} {Q_MAX[i]:.4f}"/>')
    for side in ("left", "right"):
        out.append(f'<position name="act_finger_{side}" joint="finger_{side}" kp="{FINGER_KP}"'
                   f' dampratio="1" ctrlrange="0 {FINGER_MAX}"/>')
    return "\n".join(out)


def arm_mjcf_model() -> str:
    """A stand-alone MJCF of the arm alone, mounted at the origin."""
    return (f'<mujoco model="{PANDA.name}"><compiler angle="radian" autolimits="true"/>'
            f"<default>{mjcf_defaults()}</default><worldbody>{mjcf_arm()}</worldbody>"
            f"<actuator>{mjcf_actuators()}</actuator></mujoco>")


def _rpy_from_matrix(r: np.ndarray) -> tuple[float, float, float]:
    """URDF roll-pitch-yaw (R = Rz(yaw) Ry(pitch) Rx(roll)) of a rotation matrix."""
    pitch = math.asin(-max(-1.0, min(1.0, r[2, 0])))
    if abs(r[2, 0]) < 0.999999:
        return math.atan2(r[2, 1], r[2, 2]), pitch, math.atan2(r[1, 0], r[0, 0])
    return math.atan2(-r[1, 2], r[1, 1]), pitch, 0.0


def _capsule_urdf(c: Capsule) -> str:
    a, b = np.array(c.a), np.array(c.b)
    axis = b - a
    length = float(np.linalg.norm(axis))
    z = axis / length
    x = np.cross([0.0, 1.0, 0.0], z) if abs(z[1]) < 0.9 else np.cross(z, [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    rot = np.stack([x, np.cross(z, x), z], axis=1)
    return (f'<collision><origin xyz="{_fmt((a + b) / 2)}" rpy="{_fmt(_rpy_from_matrix(rot))}"/>'
            f'<geometry><capsule radius="{c.radius}" length="{length:.6g}"/></geometry></collision>')


def _box_urdf(half, pos, rgba: str | None = None) -> str:
    size = _fmt(2 * np.asarray(half))
    vis = (f'<visual><origin xyz="{_fmt(pos)}"/><geometry><box size="{size}"/></geometry>'
           f'<material name="m{rgba}"><color rgba="{rgba}"/></material></visual>') if rgba else ""
    return f'<collision><origin xyz="{_fmt(pos)}"/><geometry><box size="{size}"/></geometry></collision>{vis}'


def urdf(desc: RobotDescription = PANDA) -> str:
    """The URDF of the same arm, with inertials taken from MuJoCo's compiled model of it."""
    import mujoco

    m = mujoco.MjModel.from_xml_string(arm_mjcf_model())

    def inertial(body: str) -> str:
        b = m.body(body)
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, b.iquat)
        ixx, iyy, izz = b.inertia
        return (f'<inertial><origin xyz="{_fmt(b.ipos)}" rpy="{_fmt(_rpy_from_matrix(rot.reshape(3, 3)))}"/>'
                f'<mass value="{float(b.mass[0]):.6g}"/><inertia ixx="{ixx:.6g}" ixy="0" ixz="0"'
                f' iyy="{iyy:.6g}" iyz="0" izz="{izz:.6g}"/></inertial>')

    out = [f'<?xml version="1.0"?>\n<robot name="{desc.name}">',
           '<link name="link0"><inertial><mass value="3.0"/><inertia ixx="0.01" ixy="0" ixz="0"'
           ' iyy="0.01" iyz="0" izz="0.01"/></inertial>'
           + _capsule_urdf(Capsule((0, 0, 0.05), (0, 0, 0.14), 0.08)) + "</link>"]
    parent = "link0"
    for i in range(7):
        pos, alpha = joint_origin(i)
        name = f"link{i + 1}"
        caps = "".join(_capsule_urdf(c) for c in desc.link_capsules[i])
        out.append(f'<link name="{name}">{inertial(name)}{caps}</link>')
        out.append(f'<joint name="joint{i + 1}" type="revolute"><parent link="{parent}"/>'
                   f'<child link="{name}"/><origin xyz="{_fmt(pos)}" rpy="{alpha:.10g} 0 0"/>'
                   f'<axis xyz="0 0 1"/><limit lower="{Q_MIN[i]}" upper="{Q_MAX[i]}"'
                   f' effort="{TAU_MAX[i]}" velocity="{DQ_MAX[i]}"/><dynamics damping="1"/></joint>')
        parent = name
    hx, hy, hz = desc.hand_half
    out.append(f'<link name="hand">{inertial("hand")}{_box_urdf(desc.hand_half, (0, 0, hz))}</link>')
    out.append(f'<joint name="hand_joint" type="fixed"><parent link="link7"/><child link="hand"/>'
               f'<origin xyz="0 0 {FLANGE_D}" rpy="0 0 {HAND_YAW_OFFSET:.10g}"/></joint>')
    out.append('<link name="tcp"><inertial><mass value="0.001"/><inertia ixx="1e-7" ixy="0"'
               ' ixz="0" iyy="1e-7" iyz="0" izz="1e-7"/></inertial></link>')
    out.append(f'<joint name="tcp_joint" type="fixed"><parent link="hand"/><child link="tcp"/>'
               f'<origin xyz="0 0 {TCP_OFFSET}"/></joint>')
    fx, fy, fz = desc.finger_half
    for side, sign in (("left", 1), ("right", -1)):
        link = f"finger_{side}"
        out.append(f'<link name="{link}">{inertial(link)}'
                   f'{_box_urdf(desc.finger_half, (0, sign * fy, fz))}</link>')
        out.append(f'<joint name="{link}" type="prismatic"><parent link="hand"/>'
                   f'<child link="{link}"/><origin xyz="0 0 {desc.finger_base_z}"/>'
                   f'<axis xyz="0 {sign} 0"/><limit lower="0" upper="{FINGER_MAX}"'
                   f' effort="{FINGER_FORCE}" velocity="0.2"/><dynamics damping="10"/></joint>')
    out.append("</robot>")
    return "\n".join(out)
