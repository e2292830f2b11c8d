"""Throughput benchmarks: ``robotworld bench env``."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class EnvBenchConfig:
    """One environment throughput measurement."""

    task: str = "pick_place"
    """Task to step."""
    steps: int = 3000
    """Control steps for the single-env and raw-physics figures."""
    num_envs: int = 16
    """Copies for the batched figures (threads: one per core, each stepping a slice)."""
    render_steps: int = 300
    """Control steps for the figure with both 96x96 cameras on (0 skips it)."""
    seed: int = 0
    """Seed of the random actions and episodes."""


def _single(task: str, steps: int, seed: int, **overrides):
    """Step one env with random actions; record each episode's spec and controls."""
    import sims

    env = sims.make(task, **overrides)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, env.action_space.shape[0])).astype(np.float32)
    env.reset(seed=seed)
    u = env.unwrapped
    for _ in range(50):  # warm-up
        env.step(actions[0])
    env.reset(seed=seed)
    segments, ctrls = [], []
    t0 = time.perf_counter()
    for k in range(steps):
        _, _, term, trunc, _ = env.step(actions[k])
        ctrls.append(u.physics.data.ctrl.copy())
        if term or trunc:
            segments.append((u.episode, ctrls))
            env.reset()
            ctrls = []
    elapsed = time.perf_counter() - t0
    segments.append((u.episode, ctrls))
    return env, elapsed, segments


def _raw_physics(cfg, segments) -> float:
    """Seconds of bare mj_step replaying the recorded controls of each episode.

    A second simulation of the same task is reset to each recorded episode (same model
    fields, same start state), so it does the same physics work as the env did.
    """
    import mujoco

    from sims.mujoco_physics import MujocoPhysics

    raw = MujocoPhysics(cfg)
    m, d, n = raw.model, raw.data, raw.substeps
    total = 0.0
    for episode, ctrls in segments:
        raw.reset(episode)
        t0 = time.perf_counter()
        for c in ctrls:
            d.ctrl[:] = c
            mujoco.mj_step(m, d, n)
        total += time.perf_counter() - t0
    return total


def _threaded(task: str, num_envs: int, steps: int, seed: int) -> float:
    from sims.vector import ThreadedVectorEnv

    venv = ThreadedVectorEnv(task, num_envs)
    venv.reset(seed=seed)
    rng = np.random.default_rng(seed)
    acts = rng.uniform(-1, 1, (steps + 10, num_envs, venv.single_action_space.shape[0]))
    for k in range(10):
        venv.step(acts[k].astype(np.float32))
    t0 = time.perf_counter()
    for k in range(steps):
        venv.step(acts[k + 10].astype(np.float32))
    elapsed = time.perf_counter() - t0
    venv.close()
    return steps * num_envs / elapsed


def _batched(task: str, num_envs: int, steps: int, seed: int) -> float:
    from sims.vector import make_vec

    venv = make_vec(task, num_envs)
    venv.reset(seed=seed)
    rng = np.random.default_rng(seed)
    acts = rng.uniform(-1, 1, (steps, num_envs, venv.single_action_space.shape[0]))
    for k in range(20):
        venv.step(acts[k].astype(np.float32))
    t0 = time.perf_counter()
    for k in range(steps):
        venv.step(acts[k].astype(np.float32))
    elapsed = time.perf_counter() - t0
    venv.close()
    return steps * num_envs / elapsed


def _mujoco_batch(model, nsim: int, substeps: int, steps: int, seed: int) -> float:
    """Bare physics of nsim copies on MuJoCo's own thread pool (mujoco.batch), control steps/s."""
    from mujoco import batch as mjbatch

    from sims import robot

    b = mjbatch.Batch(model, nsim=nsim, nthread=os.cpu_count() or 1, persistent=True)
    qpos, ctrl = b.bind("qpos"), b.bind("ctrl")
    qpos[:, :7] = robot.HOME_Q
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for k in range(steps):
        ctrl[:, :7] = robot.HOME_Q + 0.3 * np.sin(0.05 * k + rng.uniform(0, 6, (nsim, 7)))
        b.step(nstep=substeps)
    return steps * nsim / (time.perf_counter() - t0)


def bench_env(cfg: EnvBenchConfig) -> dict:
    """Single-env, batched, raw-physics and rendered throughput of one task (control steps/s)."""
    env, t_env, segments = _single(cfg.task, cfg.steps, cfg.seed)
    phys = env.unwrapped.physics
    t_raw = _raw_physics(env.unwrapped.cfg, segments)
    n = cfg.num_envs
    cores = os.cpu_count() or 1
    out = {
        "task": cfg.task,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "control_hz": env.unwrapped.cfg.control_hz,
        "physics_substeps": phys.substeps,
        "env_steps_per_s": round(cfg.steps / t_env, 1),
        "raw_physics_steps_per_s": round(cfg.steps / t_raw, 1),
        "raw_mj_step_per_s": round(cfg.steps * phys.substeps / t_raw, 1),
        "wrapper_overhead": round((t_env - t_raw) / t_raw, 4),
        "num_envs": n,
        "batched_env_steps_per_s": round(_threaded(cfg.task, n, max(cfg.steps // n, 50),
                                                   cfg.seed), 1),
        "async_vector_env_steps_per_s": round(_batched(cfg.task, cores, max(cfg.steps // cores, 100),
                                                       cfg.seed), 1),
        "mujoco_batch_physics_steps_per_s": round(
            _mujoco_batch(phys.model, 64, phys.substeps, 200, cfg.seed), 1),
    }
    out["batched_speedup"] = round(out["batched_env_steps_per_s"] / out["env_steps_per_s"], 3)
    env.close()
    if cfg.render_steps > 0:
        import sims

        renv = sims.make(cfg.task, cameras=("front", "wrist"), image_size=(96, 96))
        renv.reset(seed=cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        for _ in range(5):
            renv.step(renv.action_space.sample())
        t0 = time.perf_counter()
        for _ in range(cfg.render_steps):
            _, _, term, trunc, _ = renv.step(rng.uniform(-1, 1, 5).astype(np.float32))
            if term or trunc:
                renv.reset()
        out["rendered_env_steps_per_s"] = round(cfg.render_steps / (time.perf_counter() - t0), 1)
        from sims.render import gl_backend

        out["gl_backend"] = gl_backend()
        renv.close()
    return out


@dataclass
class TwinBenchConfig:
    """How far the MuJoCo suite and its PyBullet twin diverge on the same actions."""

    task: str = "pick_place"
    """Task to compare."""
    episodes: int = 20
    """Episodes; each replays the MuJoCo expert's actions open-loop in PyBullet."""
    seed: int = 0
    """First episode seed."""


def bench_twin(cfg: TwinBenchConfig) -> dict:
    """Object end-position gap (cm) when PyBullet replays the MuJoCo expert's action sequence."""
    import sims
    from sims.experts import make_expert

    mj = sims.make(cfg.task, terminate_on_success=False)
    bl = sims.make(cfg.task, sim="pybullet", terminate_on_success=False)
    expert = make_expert(mj)
    gaps, tcp_gaps, both = [], [], 0
    for k in range(cfg.episodes):
        obs, _ = mj.reset(seed=cfg.seed + k)
        bl.reset(seed=cfg.seed + k)
        expert.reset()
        actions = []
        done = False
        while not done:
            a = expert.act(obs)
            actions.append(a)
            obs, _, term, trunc, info_mj = mj.step(a)
            done = term or trunc
        for a in actions:
            _, _, _, _, info_bl = bl.step(a)
        s_mj, s_bl = mj.unwrapped.world_state, bl.unwrapped.world_state
        gaps.append(float(np.linalg.norm(s_mj.obj_pos[0] - s_bl.obj_pos[0])) * 100)
        tcp_gaps.append(float(np.linalg.norm(s_mj.tcp_pos - s_bl.tcp_pos)) * 100)
        both += bool(info_mj["is_success"]) and bool(info_bl["is_success"])
    mj.close()
    bl.close()
    return {"task": cfg.task, "episodes": cfg.episodes,
            "object_gap_cm_median": round(float(np.median(gaps)), 3),
            "object_gap_cm_p90": round(float(np.percentile(gaps, 90)), 3),
            "tcp_gap_cm_median": round(float(np.median(tcp_gaps)), 3),
            "open_loop_success_in_both": both / cfg.episodes}
