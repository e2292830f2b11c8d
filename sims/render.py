"""Headless rendering that picks a working GL backend for the user.

MUJOCO_GL, when set to egl or osmesa, is honoured. Otherwise EGL and then OSMesa are each
tried in a child process that renders one frame; the first that works is used, and the choice
is exported in MUJOCO_GL for child processes. If neither works the error names the Debian
packages that provide them, instead of a GLFW trace.
"""

from __future__ import annotations

import os
import subprocess
import sys

import mujoco
import numpy as np

_BACKENDS = ("egl", "osmesa")
_PACKAGES = {"egl": "libegl1 libgl1", "osmesa": "libosmesa6"}
_SELF_TEST = """
import mujoco
m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos="0 0 1"/>'
    '<geom type="sphere" size=".1" rgba="1 0 0 1"/></worldbody></mujoco>')
r = mujoco.Renderer(m, 32, 32); d = mujoco.MjData(m); mujoco.mj_forward(m, d)
r.update_scene(d); img = r.render()
assert img.shape == (32, 32, 3) and img.std() > 0, "blank frame"
"""
_chosen: str | None = None


class RenderError(RuntimeError):
    """No headless OpenGL backend works on this machine."""


def _works(backend: str) -> tuple[bool, str]:
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        out = subprocess.run([sys.executable, "-c", _SELF_TEST], env=env, capture_output=True,
                             text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False, "self-test timed out"
    return out.returncode == 0, out.stderr.strip()[-300:]


def gl_backend() -> str:
    """The GL backend this process renders with ('egl' or 'osmesa'), chosen once."""
    global _chosen
    if _chosen:
        return _chosen
    asked = os.environ.get("MUJOCO_GL", "").lower()
    if asked in _BACKENDS:
        _chosen = asked
        return asked
    reasons = []
    for backend in _BACKENDS:
        ok, why = _works(backend)
        if ok:
            _chosen = backend
            os.environ["MUJOCO_GL"] = backend
            return backend
        reasons.append(f"{backend}: {why or 'failed'}")
    raise RenderError(
        "headless rendering needs EGL or OSMesa and neither works here; install one with\n"
        "  apt-get install -y libegl1 libgl1   (EGL, GPU or Mesa)\n"
        "  apt-get install -y libosmesa6       (OSMesa, software)\n"
        "or turn cameras off. Details: " + " | ".join(reasons))


def _context_class(backend: str):
    os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    try:
        if backend == "egl":
            from mujoco.egl import GLContext
        else:
            from mujoco.osmesa import GLContext
    except Exception as e:  # ImportError, or OSError from a missing shared library
        raise RenderError(f"MUJOCO_GL={backend} cannot load ({e}); install it with "
                          f"apt-get install -y {_PACKAGES[backend]}") from e
    return GLContext


def _fill_light(light) -> None:
    """A soft light from the video camera's side, so that the arm is not a silhouette."""
    light.pos[:] = (1.2, -1.0, 1.6)
    light.dir[:] = np.array((-0.55, 0.45, -0.7)) / np.linalg.norm((-0.55, 0.45, -0.7))
    light.diffuse[:] = (0.3, 0.3, 0.3)
    light.ambient[:] = (0.08, 0.08, 0.08)
    light.specular[:] = (0.1, 0.1, 0.1)
    light.type = mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
    light.castshadow = 0
    light.headlight = 0
    light.id = -1


class OffscreenRenderer:
    """Renders named cameras of one model into uint8 (H, W, 3) arrays."""

    def __init__(self, model: mujoco.MjModel, height: int, width: int) -> None:
        backend = gl_backend()
        self._ctx = _context_class(backend)(width, height)
        self._ctx.make_current()
        self.model, self.height, self.width = model, height, width
        self._scene = mujoco.MjvScene(model, maxgeom=200)
        self._opt = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._pert = mujoco.MjvPerturb()
        self._mjr = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._mjr)
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._buf = np.empty((height, width, 3), dtype=np.uint8)

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        from sims.scene import SHOWCASE_GROUP

        self._ctx.make_current()
        self._cam.fixedcamid = self.model.camera(camera).id
        # the floor, sky and fill light are the video camera's alone: the policy cameras see
        # the scene they were trained on
        show = camera == "showcase"
        self._opt.geomgroup[SHOWCASE_GROUP] = show
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = show
        mujoco.mjv_updateScene(self.model, data, self._opt, self._pert, self._cam,
                               mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        if show and self._scene.nlight < mujoco.mjMAXLIGHT:
            _fill_light(self._scene.lights[self._scene.nlight])
            self._scene.nlight += 1
        mujoco.mjr_render(self._rect, self._scene, self._mjr)
        mujoco.mjr_readPixels(self._buf, None, self._rect, self._mjr)
        return np.flipud(self._buf).copy()

    def close(self) -> None:
        if self._ctx is not None:
            self._mjr.free()
            self._ctx.free()
            self._ctx = None
