"""The table scene as MJCF: robot, table, task objects, place zone, goal marker, obstacles.

Object slots, obstacles and markers are built once per environment; their poses, sizes, shapes
and colours are randomised per episode by writing model fields (see ``sims.mujoco_env``).
"""

from __future__ import annotations

from sims import robot
from sims.config import TaskConfig

# Named colours the instructions use (RGBA).
COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.15, 0.15, 1.0),
    "green": (0.2, 0.7, 0.25, 1.0),
    "blue": (0.15, 0.3, 0.85, 1.0),
    "yellow": (0.9, 0.8, 0.15, 1.0),
    "purple": (0.55, 0.25, 0.7, 1.0),
    "orange": (0.95, 0.5, 0.1, 1.0),
}
ZONE_RADIUS = 0.05
TABLE_HALF = (0.45, 0.6)  # table half extents in x, y around (0.45, 0)
PARK = (2.0, 2.0, -1.0)  # where unused markers are parked, far from everything


SHOWCASE = {"pos": (1.55, -1.15, 1.05), "target": (0.3, 0.0, 0.2), "fovy": 45.0}
"""The video camera (``robotworld eval --video``): the whole arm and the table, from the front
right. Its floor, sky, table body and fill light are drawn for it alone (geom group 3, the
skybox flag), so the policy cameras see what they always saw."""
SHOWCASE_SIZE = (480, 640)
"""(height, width) of the video frames."""
SHOWCASE_GROUP = 3
"""The geom group of what only the video camera draws."""
FLOOR_Z = -0.75


def look_at(pos, target) -> tuple[float, ...]:
    """MJCF ``xyaxes`` of a camera at pos looking at target with the world's z axis up."""
    import numpy as np

    f = np.asarray(target, float) - np.asarray(pos, float)
    f /= np.linalg.norm(f)
    x = np.cross(f, (0.0, 0.0, 1.0))
    x /= np.linalg.norm(x)
    y = np.cross(x, f)
    return tuple(round(float(v), 5) for v in (*x, *y))


def num_objects(cfg: TaskConfig) -> int:
    return 1 + cfg.num_distractors


def build_mjcf(cfg: TaskConfig) -> str:
    """The complete MJCF model for one task configuration.

    Two settings buy speed without changing what a policy sees. Sleeping lets bodies at rest
    (objects waiting on the table) drop out of the simulation until something touches them,
    which roughly halves the physics cost of a step. Cameras render without multisampling
    and with coarser tessellation of the round shapes: at 96x96 neither is visible, and
    together they make a frame about three times cheaper on a software renderer.
    """
    s = robot
    obj_aff = s.BIT_STATIC | s.BIT_ARM | s.BIT_OBJECT | s.BIT_FINGER
    static_aff = s.BIT_ARM | s.BIT_OBJECT | s.BIT_FINGER
    objects = []
    for i in range(num_objects(cfg)):
        objects.append(
            f'<body name="obj{i}" pos="{0.5 + 0.1 * i} 0.3 0.03"><freejoint name="obj{i}"/>'
            f'<geom name="obj{i}" type="box" size="0.02 0.02 0.02" mass="0.08" condim="4"'
            f' friction="1.0 0.01 0.0001" contype="{s.BIT_OBJECT}" conaffinity="{obj_aff}"/></body>')
    obstacles = [
        f'<geom name="obstacle{i}" type="box" size="0.02 0.04 0.04" pos="{PARK[0]} {PARK[1] + i} 0.04"'
        f' contype="{s.BIT_STATIC}" conaffinity="{static_aff}" rgba="0.45 0.4 0.35 1"/>'
        for i in range(cfg.num_obstacles)
    ]
    h, w = cfg.image_size
    return f"""
<mujoco model="robotworld_{cfg.task}">
  <compiler angle="radian" autolimits="true" inertiafromgeom="true"/>
  <option timestep="{cfg.physics_dt}" integrator="implicitfast" cone="elliptic" impratio="10">
    <flag multiccd="enable" sleep="enable"/>
  </option>
  <visual>
    <global offwidth="{max(w, 640)}" offheight="{max(h, 480)}"/>
    <quality shadowsize="0" offsamples="0" numslices="16" numstacks="8"/>
  </visual>
  <default>{robot.mjcf_defaults()}</default>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.62 0.76 0.92" rgb2="0.93 0.95 0.98"
             width="128" height="128"/>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.36 0.37 0.4" rgb2="0.3 0.31 0.34"
             width="128" height="128"/>
    <material name="floor" texture="floor" texrepeat="10 10"/>
  </asset>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.05" pos="0 0 {FLOOR_Z}" material="floor" group="{SHOWCASE_GROUP}"
          contype="0" conaffinity="0"/>
    <geom name="table_body" type="box" size="{TABLE_HALF[0]} {TABLE_HALF[1]} {-FLOOR_Z / 2 - 0.005}"
          pos="0.45 0 {FLOOR_Z / 2 - 0.005}" rgba="0.5 0.42 0.33 1" group="{SHOWCASE_GROUP}" contype="0" conaffinity="0"/>
    <geom name="pedestal" type="cylinder" size="0.09 {-FLOOR_Z / 2}" pos="0 0 {FLOOR_Z / 2}" rgba="0.3 0.3 0.33 1"
          group="{SHOWCASE_GROUP}" contype="0" conaffinity="0"/>
    <camera name="showcase" pos="{' '.join(map(str, SHOWCASE['pos']))}"
            xyaxes="{' '.join(map(str, look_at(SHOWCASE['pos'], SHOWCASE['target'])))}" fovy="{SHOWCASE['fovy']}"/>
    <light name="key" pos="0.5 -0.5 1.5" dir="0 0.3 -1" directional="true"/>
    <geom name="table" type="plane" size="{TABLE_HALF[0]} {TABLE_HALF[1]} 0.01" pos="0.45 0 0"
          rgba="0.75 0.68 0.58 1" contype="{s.BIT_STATIC}" conaffinity="{static_aff}"/>
    <geom name="zone" type="cylinder" size="{ZONE_RADIUS} 0.0005" pos="{PARK[0]} {PARK[1]} 0.0005"
          rgba="0.15 0.3 0.85 0.6" contype="0" conaffinity="0"/>
    <site name="goal" pos="{PARK[0]} {PARK[1]} {PARK[2]}" size="0.015" rgba="0.1 0.9 0.1 0.6"/>
    <camera name="front" pos="1.3 0 0.75" xyaxes="0 1 0 -0.607 0 0.794" fovy="55"/>
    {''.join(obstacles)}
    {robot.mjcf_arm()}
    {''.join(objects)}
  </worldbody>
  <actuator>{robot.mjcf_actuators()}</actuator>
  <sensor>
    <contact name="grasp_left" geom1="finger_left" body2="obj0" data="found" num="1"/>
    <contact name="grasp_right" geom1="finger_right" body2="obj0" data="found" num="1"/>
    <contact name="collision" subtree1="link1" body2="world" data="found" num="1"/>
  </sensor>
</mujoco>"""
