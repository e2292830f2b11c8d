#!/usr/bin/env bash
# Rendered steps per second of the Fetch pick-and-place env (gymnasium-robotics) with one 128x128
# camera drawn every step: the peer that `robotworld bench env`'s rendered_env_steps_per_s (two
# 96x96 cameras) is compared with. Run both in the same sitting; the machine's speed drifts.
#
#   scripts/peer_fetch_rendered.sh [STEPS]      (prints one number: steps/s)
#
# gymnasium-robotics needs MuJoCo 3.3 (it fails on MuJoCo 4.0), so it runs in the venv that
# ../shared/peers/fetch_steps.sh makes (FETCH_VENV, by default fetch-peer-venv in the temp
# folder), made here the same way if it is missing. MUJOCO_GL picks the GL backend (default egl,
# as robotworld picks first).
set -eu
steps=${1:-300}
venv=${FETCH_VENV:-$(python3 -c "import tempfile; print(tempfile.gettempdir())")/fetch-peer-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "mujoco==3.3.0" gymnasium-robotics >/dev/null 2>&1
fi
MUJOCO_GL=${MUJOCO_GL:-egl} "$venv/bin/python" - "$steps" 2>/dev/null <<'PY'
import sys, time
import gymnasium as gym, gymnasium_robotics
gym.register_envs(gymnasium_robotics)
env = gym.make("FetchPickAndPlace-v4", render_mode="rgb_array", width=128, height=128)
env.reset(seed=0)
n = int(sys.argv[1])
for _ in range(20):  # warm-up: the first frames compile shaders
    env.step(env.action_space.sample())
    env.render()
t = time.perf_counter()
for _ in range(n):
    _, _, terminated, truncated, _ = env.step(env.action_space.sample())
    frame = env.render()
    if terminated or truncated:
        env.reset()
elapsed = time.perf_counter() - t
assert frame.shape == (128, 128, 3), frame.shape
print(round(n / elapsed, 1))
PY
