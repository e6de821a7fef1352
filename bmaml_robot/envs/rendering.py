"""Headless frames of the robots: MuJoCo offscreen rendering (EGL or OSMesa) and Navigation2D drawn
with numpy. Shared by the single envs' ``render()`` and ``bmaml-render`` (``bmaml_robot.render``).

Headless OpenGL. ``mujoco.Renderer`` takes its OpenGL backend from ``MUJOCO_GL`` when ``mujoco``
is first imported, and ``bmaml_robot`` imports ``mujoco`` at once (its C++ core links MuJoCo's
library), so the backend cannot be chosen after the fact through ``mujoco.Renderer``. This module
therefore makes the backend's context itself (``mujoco.egl.GLContext`` or
``mujoco.osmesa.GLContext``) and renders with the same calls ``mujoco.Renderer`` makes
(``MjvScene``, ``MjrContext`` on the offscreen buffer, ``mjv_updateScene``, ``mjr_render``,
``mjr_readPixels``). The backend: ``MUJOCO_GL`` if it is set to ``egl`` or ``osmesa``, otherwise
the first of EGL and OSMesa that can make a context, probed in a fresh interpreter (an OpenGL
platform cannot be changed once loaded). When neither works, ``GLUnavailableError`` says what
failed and which packages to install.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import mujoco
import numpy as np

GL_BACKENDS = ("egl", "osmesa")
#: Debian/Ubuntu packages that provide each backend's library.
APT_PACKAGES = {"egl": "libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri", "osmesa": "libosmesa6"}
_PROBE = """
import os
import mujoco
if os.environ["MUJOCO_GL"] == "egl":
    from mujoco.egl import GLContext
else:
    from mujoco.osmesa import GLContext
context = GLContext(16, 16)
context.make_current()
model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100).free()
context.free()
"""


class GLUnavailableError(RuntimeError):
    """No headless OpenGL backend works on this machine (the message says how to install one)."""


# ----------------------------------------------------------------------------- OpenGL backend
def probe_gl_backend(backend: str, timeout: float = 60.0) -> str | None:
    """None if ``backend`` (``egl`` or ``osmesa``) can make a context, else why it cannot.

    Probed in a fresh interpreter: PyOpenGL's platform is fixed for a process once loaded."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


def choose_gl_backend(probe: Callable[[str], str | None]) -> str:
    """The backend to render with (module docstring), asking ``probe`` (``probe_gl_backend``'s
    contract) which work; GLUnavailableError if none."""
    requested = os.environ.get("MUJOCO_GL", "").strip().lower()
    if requested and requested not in GL_BACKENDS:
        raise GLUnavailableError(
            f"MUJOCO_GL: expected one of {list(GL_BACKENDS)} (headless offscreen rendering) or unset, "
            f"got {requested!r}"
        )
    candidates = (requested,) if requested else GL_BACKENDS
    failures = {}
    for backend in candidates:
        failure = probe(backend)
        if failure is None:
            return backend
        failures[backend] = failure
    raise GLUnavailableError(gl_unavailable_message(failures))


@functools.cache
def gl_backend() -> str:
    """The headless OpenGL backend to render with, probed once per process; GLUnavailableError
    (naming the packages to install) if none works."""
    return choose_gl_backend(probe_gl_backend)


def gl_unavailable_message(failures: Mapping[str, str]) -> str:
    """What failed for each backend and how to install one."""
    tried = "; ".join(f"{backend}: {why}" for backend, why in failures.items())
    return (
        f"no headless OpenGL backend works here ({tried}). Install one, e.g. on Debian/Ubuntu "
        f"`apt-get install {APT_PACKAGES['egl']}` (EGL, GPU or Mesa software rendering) or "
        f"`apt-get install {APT_PACKAGES['osmesa']}` (OSMesa, software only), then run again "
        f"(MUJOCO_GL=egl or MUJOCO_GL=osmesa picks one explicitly). PyOpenGL must be installed too "
        f"(a dependency of mujoco)."
    )


def gl_context_class(backend: str) -> Any:
    """``mujoco.egl.GLContext`` or ``mujoco.osmesa.GLContext``; GLUnavailableError if it cannot load."""
    platform = os.environ.get("PYOPENGL_PLATFORM")
    if platform and platform.lower() != backend:
        raise GLUnavailableError(
            f"PYOPENGL_PLATFORM: this process already uses OpenGL platform {platform!r}, so the {backend} "
            f"backend cannot be loaded; unset PYOPENGL_PLATFORM or set MUJOCO_GL={platform}"
        )
    try:
        if backend == "egl":
            from mujoco.egl import GLContext
        else:
            from mujoco.osmesa import GLContext
    except ImportError as error:
        raise GLUnavailableError(gl_unavailable_message({backend: str(error)})) from error
    return GLContext


class OffscreenRenderer:
    """Renders MuJoCo states of one model to RGB images, headless (what ``mujoco.Renderer`` does,
    on ``backend``, default ``gl_backend()``). Use as a context manager, or call ``close``."""

    def __init__(self, model: mujoco.MjModel, width: int, height: int, camera: str | None = "track",
                 backend: str | None = None) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.width, self.height = width, height
        # The offscreen buffer must hold the image (the MJCF's <visual><global offwidth> etc.).
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self._context = None
        self._mjr = None
        self._context = gl_context_class(backend or gl_backend())(width, height)
        try:
            self._context.make_current()
            self._scene = mujoco.MjvScene(model, maxgeom=10_000)
            self._mjr = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._mjr)
        except BaseException:
            self.close()  # the GL context is freed even when the scene could not be made
            raise
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._option = mujoco.MjvOption()
        self._perturb = mujoco.MjvPerturb()
        self.camera = mujoco.MjvCamera()
        camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) if camera else -1
        if camera_id >= 0:
            self.camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
            self.camera.fixedcamid = camera_id
        else:  # follow the first body from a free camera
            self.camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            self.camera.trackbodyid = 1 if model.nbody > 1 else 0
            self.camera.distance = 1.5 * model.stat.extent
            self.camera.elevation = -20.0

    def render(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """The image of state (qpos ``[nq]``, qvel ``[nv]``), uint8 ``[height, width, 3]``."""
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)
        assert self._context is not None, "render() after close()"
        self._context.make_current()
        mujoco.mjv_updateScene(self.model, self.data, self._option, self._perturb, self.camera,
                               mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        mujoco.mjr_render(self._rect, self._scene, self._mjr)
        image = np.empty((self.height, self.width, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(image, None, self._rect, self._mjr)
        return np.flipud(image).copy()  # OpenGL's rows start at the bottom

    def close(self) -> None:
        if self._context is not None:
            self._context.make_current()
            if self._mjr is not None:
                self._mjr.free()
                self._mjr = None
            self._context.free()
            self._context = None

    def __enter__(self) -> OffscreenRenderer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ----------------------------------------------------------------------------- Navigation2D
_GOAL_COLOUR = (214, 39, 40)    # red, as bmaml-render's goal star
_ROBOT_COLOUR = (31, 119, 180)  # blue
_SQUARE_COLOUR = (160, 160, 160)


def draw_navigation(position: Sequence[float], goal: Sequence[float], path: np.ndarray | None,
                    width: int, height: int) -> np.ndarray:
    """Navigation2D's frame, uint8 ``[height, width, 3]``, drawn with numpy (no OpenGL): the square
    of goals ``[-0.5, 0.5]^2`` (grey), the path so far (``[T, 2]``, blue line), the goal (red
    disc) and the robot (blue disc) on white, centred on the origin, x right and y up."""
    robot, target = np.asarray(position, float), np.asarray(goal, float)
    points = [robot, target] + ([] if path is None else list(np.asarray(path, float).reshape(-1, 2)))
    half = max(0.6, 1.1 * float(np.abs(np.vstack(points)).max()))  # the view grows with the robot
    scale = (min(width, height) / 2 - 3) / half

    def pixel(p: np.ndarray) -> np.ndarray:  # (column, row)
        return np.array([width / 2 + p[0] * scale, height / 2 - p[1] * scale])

    image = np.full((height, width, 3), 255, dtype=np.uint8)
    corners = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5)]
    for a, b in zip(corners[:-1], corners[1:]):
        _segment(image, pixel(np.array(a)), pixel(np.array(b)), _SQUARE_COLOUR, 0.6)
    if path is not None and len(points) > 3:
        trail = points[2:]
        for start, end in zip(trail[:-1], trail[1:]):
            _segment(image, pixel(start), pixel(end), _ROBOT_COLOUR, 1.0)
    radius = max(2.0, min(width, height) / 40)
    _disc(image, pixel(target), radius * 1.4, _GOAL_COLOUR)
    _disc(image, pixel(robot), radius, _ROBOT_COLOUR)
    return image


def _disc(image: np.ndarray, centre: np.ndarray, radius: float, colour: tuple[int, int, int]) -> None:
    height, width = image.shape[:2]
    r0, r1 = max(0, int(centre[1] - radius)), min(height, int(centre[1] + radius) + 2)
    c0, c1 = max(0, int(centre[0] - radius)), min(width, int(centre[0] + radius) + 2)
    if r0 >= r1 or c0 >= c1:
        return
    rows, cols = np.ogrid[r0:r1, c0:c1]
    inside = (rows + 0.5 - centre[1]) ** 2 + (cols + 0.5 - centre[0]) ** 2 <= radius**2
    image[r0:r1, c0:c1][inside] = colour


def _segment(image: np.ndarray, a: np.ndarray, b: np.ndarray, colour: tuple[int, int, int],
             half_width: float) -> None:
    """A line from pixel ``a`` to ``b``: samples every half pixel, each a small square."""
    count = int(np.ceil(2 * np.hypot(*(b - a)))) + 1
    samples = a + np.linspace(0.0, 1.0, count)[:, None] * (b - a)
    height, width = image.shape[:2]
    reach = int(np.ceil(half_width))
    for dr in range(-reach + 1, reach + 1):
        for dc in range(-reach + 1, reach + 1):
            rows = np.floor(samples[:, 1]).astype(int) + dr
            cols = np.floor(samples[:, 0]).astype(int) + dc
            keep = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
            image[rows[keep], cols[keep]] = colour
