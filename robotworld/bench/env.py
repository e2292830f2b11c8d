"""Environment throughput: one env against its bare physics, and the batched forms."""

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
    """Copies for the batched figures (process and threaded vector forms, one worker per core)."""
    rounds: int = 10
    """Turns the single env, its bare physics and the vector forms take, steps / rounds env
    steps each: every ratio is the median over rounds (a shared machine drifts within seconds)."""
    render_steps: int = 300
    """Control steps for the figure with both 96x96 cameras on (0 skips it)."""
    seed: int = 0
    """Seed of the random actions and episodes."""


class _Interleaved:
    """One env, a bare copy of its physics and the suite's two vector forms, stepped in turns.

    A round is ``single(n)``, which steps the env for a chunk of random actions and replays
    that chunk's controls on the bare physics (``mj_step`` alone, from the same states), then
    ``vector(form, m)`` for each form, about as many env steps. Every ratio ``bench env`` reports is taken within a round and
    the median over rounds reported: on a shared machine whose speed drifts by tens of percent
    within seconds, figures measured one after another compare the drift as much as the code.
    """

    def __init__(self, task: str, steps: int, num_envs: int, seed: int) -> None:
        import sims
        from sims.mujoco_physics import MujocoPhysics
        from sims.vector import ProcessVectorEnv, ThreadedVectorEnv

        self.env = env = sims.make(task)
        self.u = u = env.unwrapped
        rng = np.random.default_rng(seed)
        self.actions = rng.uniform(-1, 1, (steps + 50, env.action_space.shape[0])).astype(np.float32)
        env.reset(seed=seed)
        for k in range(50):  # warm-up
            env.step(self.actions[steps + k])
        env.reset(seed=seed)
        self.raw = MujocoPhysics(u.cfg)
        self.raw.reset(u.episode)
        self.k = 0
        self.num_envs = num_envs
        self.vec = {}
        self.vec_actions = rng.uniform(-1, 1, (steps, num_envs, env.action_space.shape[0])).astype(np.float32)
        self.vk = 0
        try:
            for form, cls in (("process", ProcessVectorEnv), ("threaded", ThreadedVectorEnv)):
                self.vec[form] = v = cls(task, num_envs)
                v.reset(seed=seed)
                for k in range(10):  # warm-up
                    v.step(self.vec_actions[k])
        except BaseException:
            self.close()
            raise

    def single(self, n: int) -> tuple[float, float]:
        """Step the env n times, then replay its controls on the bare physics: (env s, bare s).

        The controls are recorded into a preallocated array, so that recording them costs the
        timed loop one row copy per step; the bare physics is reset, untimed, wherever the env
        was (the env's resets are part of its time, as they are of a user's).
        """
        import mujoco

        env, u, raw = self.env, self.u, self.raw
        ctrl = u.physics.data.ctrl
        recorded = np.empty((n, ctrl.size))
        resets = []  # (last step of an episode, the next episode)
        acts = self.actions[self.k:self.k + n]
        self.k += n
        t0 = time.perf_counter()
        for i in range(n):
            _, _, term, trunc, _ = env.step(acts[i])
            recorded[i] = ctrl
            if term or trunc:
                env.reset()
                resets.append((i, u.episode))
        t_env = time.perf_counter() - t0
        m, d, sub, raw_ctrl = raw.model, raw.data, raw.substeps, raw.data.ctrl
        t_raw, start = 0.0, 0
        for end, episode in resets + [(n - 1, None)]:
            t0 = time.perf_counter()
            for c in recorded[start:end + 1]:
                raw_ctrl[:] = c
                mujoco.mj_step(m, d, sub)
            t_raw += time.perf_counter() - t0
            if episode is not None:
                raw.reset(episode)
            start = end + 1
        return t_env, t_raw

    def vector(self, form: str, n: int) -> float:
        """Seconds for n steps of a vector form (n * num_envs env steps)."""
        v, acts = self.vec[form], self.vec_actions
        t0 = time.perf_counter()
        for _ in range(n):
            v.step(acts[self.vk % len(acts)])
            self.vk += 1
        return time.perf_counter() - t0

    def close(self) -> None:
        for v in self.vec.values():
            v.close()
        self.env.close()


def _vector(form: str, task: str, num_envs: int, steps: int, seed: int) -> float:
    """Control steps/s of one of the suite's vector forms ('process' or 'threaded').

    Start-up (worker processes, copies) is outside the timed loop, as is a warm-up.
    """
    from sims.vector import ProcessVectorEnv, ThreadedVectorEnv

    venv = (ProcessVectorEnv if form == "process" else ThreadedVectorEnv)(task, num_envs)
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


def _parallel_ceiling(model, steps: int = 300) -> float:
    """Speed-up of bare mj_step on one thread per core over the same work on one thread.

    The most any batched form can gain on this machine; on a shared virtual machine it varies
    from run to run, so it is measured in the same run as the batched figure.
    """
    import threading

    import mujoco

    from sims import robot

    n = os.cpu_count() or 1
    datas = [mujoco.MjData(model) for _ in range(n)]
    for d in datas:
        d.qpos[:7] = robot.HOME_Q
        d.ctrl[:7] = robot.HOME_Q + 0.2
        mujoco.mj_forward(model, d)

    def work(d):
        for _ in range(steps):
            mujoco.mj_step(model, d, 25)

    t0 = time.perf_counter()
    for d in datas:
        work(d)
    serial = time.perf_counter() - t0
    threads = [threading.Thread(target=work, args=(d,)) for d in datas]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return serial / (time.perf_counter() - t0)


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
    if cfg.rounds < 1 or cfg.steps < cfg.rounds:
        raise ValueError(f"rounds = {cfg.rounds}, steps = {cfg.steps}: expected 1 <= rounds <= steps")
    n = cfg.num_envs
    chunk = cfg.steps // cfg.rounds
    vec_steps = max(chunk // n, 3)
    run = _Interleaved(cfg.task, chunk * cfg.rounds, n, cfg.seed)
    try:
        rows = []  # per round: env s, bare s, process s, threaded s
        for _ in range(cfg.rounds):
            t_env, t_raw = run.single(chunk)
            rows.append((t_env, t_raw, run.vector("process", vec_steps), run.vector("threaded", vec_steps)))
        phys = run.u.physics
        model = phys.model
    finally:
        run.close()
    t = np.array(rows)
    total = t.sum(0)
    env_rate, vec_rate = chunk / t[:, 0], vec_steps * n / t[:, 2:]  # per round
    overhead = (t[:, 0] - t[:, 1]) / t[:, 1]  # per round: (env - bare) / bare
    j = int(np.argmin(total[2:]))  # the faster vector form over all rounds
    speedup = vec_rate[:, j] / env_rate
    cores = os.cpu_count() or 1
    out = {
        "task": cfg.task,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "control_hz": run.u.cfg.control_hz,
        "physics_substeps": phys.substeps,
        "rounds": cfg.rounds,
        "env_steps_per_s": round(chunk * cfg.rounds / total[0], 1),
        "raw_physics_steps_per_s": round(chunk * cfg.rounds / total[1], 1),
        "raw_mj_step_per_s": round(chunk * cfg.rounds * phys.substeps / total[1], 1),
        "wrapper_overhead": round(float(np.median(overhead)), 4),
        "wrapper_overhead_range": [round(float(overhead.min()), 4), round(float(overhead.max()), 4)],
        "num_envs": n,
        "process_vector_env_steps_per_s": round(vec_steps * n * cfg.rounds / total[2], 1),
        "threaded_vector_env_steps_per_s": round(vec_steps * n * cfg.rounds / total[3], 1),
        "async_vector_env_steps_per_s": round(_batched(cfg.task, cores, max(cfg.steps // cores, 100),
                                                       cfg.seed), 1),
        "mujoco_batch_physics_steps_per_s": round(
            _mujoco_batch(model, 64, phys.substeps, 200, cfg.seed), 1),
    }
    # the batched figure is the faster of the suite's two vector forms, named; its speed-up is
    # the median over rounds of the round's batched rate over the round's single-env rate
    form = ("process", "threaded")[j]
    out["batched_form"] = f"{form.capitalize()}VectorEnv"
    out["batched_env_steps_per_s"] = out[f"{form}_vector_env_steps_per_s"]
    out["batched_speedup"] = round(float(np.median(speedup)), 3)
    out["batched_speedup_range"] = [round(float(speedup.min()), 3), round(float(speedup.max()), 3)]
    out["bare_physics_parallel_speedup"] = round(_parallel_ceiling(model), 3)
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
