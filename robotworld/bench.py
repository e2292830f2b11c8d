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


@dataclass
class DataBenchConfig:
    """Data-engine figures: collection throughput, memory over a long run, window sampling."""

    task: str = "pick_place"
    """Task to collect."""
    policy: str = "random"
    """Behaviour policy (random matches the random actions of ``bench env``)."""
    episodes: int = 200
    """Episodes for each state-only throughput figure."""
    camera_episodes: int = 20
    """Episodes for each figure with both 96x96 cameras on."""
    memory_episodes: int = 2000
    """Episodes of the run whose resident memory is tracked."""
    window_transitions: int = 1_000_000
    """Transitions in the dataset that windows are sampled from (the memory run, extended)."""
    horizon: int = 16
    """Steps per sampled window."""
    batch_size: int = 256
    """Windows per sampled batch."""
    out: str = "runs/bench_data"
    """Scratch directory for the datasets (reused: the long collection resumes)."""
    seed: int = 0
    """Seed of the collections and the sampler."""


def _tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of a process and all its descendants, from /proc."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            status = open(f"/proc/{d}/status").read()
        except OSError:
            continue
        parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[int(d)] = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    keep, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in keep]
        keep.update(kids)
        frontier.extend(kids)
    return sum(rss.get(p, 0) for p in keep) / 1024


def _collect_rate(out: str, task: str, policy: str, episodes: int, workers: int, cameras: str,
                  seed: int) -> float:
    import shutil

    from policies import factory
    from robotworld.data import CollectConfig, collect

    shutil.rmtree(out, ignore_errors=True)
    r = collect(CollectConfig(task=task, policy=policy, episodes=episodes, workers=workers, out=out,
                              cameras=cameras, seed=seed, progress=False), factory(policy))
    shutil.rmtree(out, ignore_errors=True)
    return r.transitions_per_s


def bench_data(cfg: DataBenchConfig) -> dict:
    """Collection throughput (1 and 2 workers, with and without cameras), memory, window sampling."""
    from pathlib import Path

    from policies import factory
    from robotworld.data import CollectConfig, collect
    from robotworld.data.windows import WindowSampler

    root = Path(cfg.out)
    out: dict = {"task": cfg.task, "policy": cfg.policy,
                 "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    for cams, n, tag in (("", cfg.episodes, "state"), ("front,wrist", cfg.camera_episodes, "cameras")):
        for w in (1, 2):
            out[f"collect_{tag}_{w}w_transitions_per_s"] = round(
                _collect_rate(str(root / f"rate_{tag}_{w}"), cfg.task, cfg.policy, n, w, cams, cfg.seed), 1)
        out[f"collect_{tag}_speedup_2w"] = round(out[f"collect_{tag}_2w_transitions_per_s"]
                                                 / out[f"collect_{tag}_1w_transitions_per_s"], 3)
    out["batched_env_steps_per_s"] = round(_vector("threaded", cfg.task, 16, 200, cfg.seed), 1)
    out["collect_vs_batched_env"] = round(out["collect_state_2w_transitions_per_s"]
                                          / out["batched_env_steps_per_s"], 3)
    # memory over a long run: resident memory of the driver and its workers every 100 episodes
    samples: list[tuple[int, float]] = []
    done = [0]

    def on_episode(_: int) -> None:
        done[0] += 1
        if done[0] % 100 == 0:
            samples.append((done[0], _tree_rss_mb(os.getpid())))

    big = str(root / "long")
    mem = collect(CollectConfig(task=cfg.task, policy=cfg.policy, episodes=cfg.memory_episodes, workers=2,
                                out=big, seed=cfg.seed, progress=False), factory(cfg.policy), on_episode=on_episode)
    if len(samples) >= 4:
        x = np.array([s[0] for s in samples[2:]], float)
        y = np.array([s[1] for s in samples[2:]], float)
        out["memory_episodes"] = cfg.memory_episodes
        out["rss_mb_after_300_episodes"] = round(float(y[0]), 1)
        out["rss_mb_at_end"] = round(float(y[-1]), 1)
        out["rss_mb_max"] = round(float(y.max()), 1)
        out["rss_growth_mb_per_1000_episodes"] = round(float(np.polyfit(x, y, 1)[0] * 1000), 2)
    out["memory_run_collected"] = mem.collected
    # window sampling from a dataset of window_transitions transitions (the long run, extended)
    from robotworld.data import Dataset

    per_ep = max(1, Dataset(big).info()["mean_episode_steps"])
    need = int(np.ceil(cfg.window_transitions / per_ep))
    collect(CollectConfig(task=cfg.task, policy=cfg.policy, episodes=max(need, cfg.memory_episodes), workers=2,
                          out=big, seed=cfg.seed, progress=True), factory(cfg.policy))
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    sampler = WindowSampler(big, horizon=cfg.horizon, seed=cfg.seed, progress=True)
    out["window_cache_build_s"] = round(time.perf_counter() - t0, 2)
    out["window_dataset_transitions"] = sampler.transitions
    for _ in range(20):  # page the memory map in, as a training run's first batches do
        sampler.sample(cfg.batch_size).to_torch()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 5.0:
        sampler.sample(cfg.batch_size).to_torch()
        n += cfg.batch_size
    out["windows_per_s"] = round(n / (time.perf_counter() - t0), 1)
    out["window_horizon"], out["window_batch"] = cfg.horizon, cfg.batch_size
    return out


def _matmul_flops(width: int, device) -> float:
    """The machine's bare matmul rate (FLOP/s) in this run: (4096, width) x (width, width), the
    shape of a world-model layer over a large batch. A shared machine's speed drifts by 2x
    from day to day, so the model's figures are read against this one from the same run."""
    import torch

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a = torch.randn(4096, width, device=device)
    w = torch.randn(width, width, device=device)
    for _ in range(3):
        a @ w
    sync()
    t0, n = time.perf_counter(), 50
    for _ in range(n):
        a @ w
    sync()
    return 2 * a.shape[0] * width * width * n / (time.perf_counter() - t0)


@dataclass
class ImagineBenchConfig:
    """World-model speed: imagined transitions per second, and training samples per second."""

    checkpoint: str = "default"
    """World-model checkpoint ('default': the shipped one; a preset name: tiny, small or base untrained)."""
    batch: int = 1024
    """Action sequences imagined per call (B)."""
    horizon: int = 16
    """Steps per sequence (H)."""
    iters: int = 30
    """Timed imagine calls."""
    train_batch: int = 256
    """Windows per training step for the training-throughput figure."""
    device: str = "auto"
    """auto, cpu or cuda."""
    threads: int = 0
    """CPU threads for torch (0: torch's default, one per core)."""
    compile: bool = False
    """Also time imagine compiled (torch.compile; inductor needs a C++ compiler on CPU, and
    compiling takes about a minute): transitions_per_s_compiled beside the eager figure."""


def bench_imagine(cfg: ImagineBenchConfig) -> dict:
    """transitions_per_s of imagine at B x H, and train_samples_per_s of the training step."""
    import torch

    from robotworld.device import pick_device
    from robotworld.model import checkpoint as ckpt
    from robotworld.model.train import Objective, TrainConfig
    from robotworld.model.world_model import PRESETS, ModelSpec, Start, WorldModel, model_config

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    if cfg.checkpoint in PRESETS:
        model = WorldModel(ModelSpec(max_objects=3), model_config(cfg.checkpoint)).to(device)
    else:
        model = ckpt.load(cfg.checkpoint, device)
    model.eval()
    spec, L = model.spec, model.cfg.latent_dim
    g = torch.Generator(device="cpu").manual_seed(0)
    z = torch.rand(cfg.batch, L, generator=g).to(device)
    acts = (torch.rand(cfg.batch, cfg.horizon, spec.action_dim, generator=g) * 2 - 1).to(device)
    temb = model.task_emb(torch.zeros(cfg.batch, dtype=torch.long, device=device))
    B, N = cfg.batch, spec.max_objects
    # every sequence from its own start, with an observed finger: the whole path, every gate on
    ctx = Start(z, temb, torch.zeros_like(temb), (torch.rand(B, N, 3, generator=g) * 0.1 + 0.45).to(device),
                torch.full((B, 3), 0.5, device=device), torch.full((B, 3), 0.45, device=device),
                torch.full((B,), 0.08, device=device))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(imagine) -> list[float]:
        """Seconds per call over cfg.iters calls, after three warm-up calls (a compiled one
        compiles in the first)."""
        with torch.inference_mode():
            for _ in range(3):
                imagine(ctx, acts)
            sync()
            out = []
            for _ in range(cfg.iters):
                t0 = time.perf_counter()
                imagine(ctx, acts)
                sync()
                out.append(time.perf_counter() - t0)
        return out

    times = timed(model.imagine)
    per_call = float(np.median(times))
    compiled: dict = {}
    if cfg.compile:
        ctimes = timed(torch.compile(model.imagine, dynamic=False))
        c = float(np.median(ctimes))
        compiled = {"imagine_ms_p50_compiled": round(c * 1e3, 2),
                    "imagine_ms_p95_compiled": round(float(np.percentile(ctimes, 95)) * 1e3, 2),
                    "transitions_per_s_compiled": round(cfg.batch * cfg.horizon / c, 1)}
    # training throughput on a batch of the training shapes
    tcfg = TrainConfig(horizon=10)
    obj = Objective(model.train(), tcfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    B, H = cfg.train_batch, tcfg.horizon
    batch = {"obs": (torch.randn(B, H + 1, spec.obs_dim, generator=g) * 0.1 + 0.3).to(device),
             "action": (torch.rand(B, H, spec.action_dim, generator=g) * 2 - 1).to(device),
             "objects_real": torch.full((B,), spec.max_objects, device=device),
             "task": torch.zeros(B, dtype=torch.long, device=device), "instructions": ["pick up the red cube"] * B}
    for k in ("reward", "success", "grasp", "collision", "terminated"):
        batch[k] = torch.zeros(B, H, device=device)
    batch["mask"] = torch.ones(B, H, device=device)
    steps_t = []
    for k in range(13):
        t0 = time.perf_counter()
        loss, _ = obj(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        if k >= 3:
            steps_t.append(time.perf_counter() - t0)
    return {"device": str(device), "torch_threads": torch.get_num_threads(),
            "model": model.cfg.preset, "latent_dim": L, "hidden_dim": model.cfg.hidden_dim,
            "parameters": sum(p.numel() for p in model.parameters()),
            "batch": cfg.batch, "horizon": cfg.horizon,
            "imagine_ms_p50": round(per_call * 1e3, 2),
            "imagine_ms_p95": round(float(np.percentile(times, 95)) * 1e3, 2),
            "transitions_per_s": round(cfg.batch * cfg.horizon / per_call, 1), **compiled,
            "train_batch": B, "train_horizon": H,
            "train_samples_per_s": round(B / float(np.median(steps_t)), 1),
            "matmul_gflops": round(_matmul_flops(model.cfg.hidden_dim, device) / 1e9, 2)}


@dataclass
class PlannerBenchConfig:
    """Planner latency over the world model, and its arithmetic efficiency."""

    checkpoint: str = "default"
    """World-model checkpoint."""
    task: str = "pick_place"
    """Task whose first observation the plans start from."""
    plans: int = 20
    """Timed plans per setting (after two warm-up plans)."""
    method: str = "mppi"
    """mppi or cem."""
    device: str = "auto"
    """auto, cpu or cuda."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    compile: bool = False
    """Compile every iteration of a plan as one function (one CUDA graph a plan on a GPU);
    compile time is not counted."""
    vs: str = ""
    """Also time a peer planner on the same model, samples, horizon and iterations:
    pytorch_mppi (pip install pytorch-mppi, in robotworld's dev extra)."""
    settings: str = "1024x16x6,512x16x6,256x8x4"
    """Comma-separated SAMPLESxHORIZONxITERATIONS to time; the first is the headline
    (plan_ms_p50 / p95, flops_fraction and the peer comparison)."""
    batch_envs: int = 0
    """Also time one plan for this many environments at once (each from its own first
    observation, the headline's setting each): batch_plan_ms_p50 / p95 and batch_plans_per_s.
    0: not timed."""
    tf32: bool = False
    """Let CUDA matmuls use TF32 (the tensor cores' float32 mode), the bare matmul too."""


def parse_settings(text: str) -> list[tuple[int, int, int]]:
    """'1024x16x6,256x8x4' -> [(1024, 16, 6), (256, 8, 4)]; a clear error otherwise."""
    out = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"settings: '{item}' is not SAMPLESxHORIZONxITERATIONS with positive integers "
                             "(e.g. 1024x16x6)")
        out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def _pytorch_mppi_plan_s(model, cost, env, device, plans: int, samples: int = 1024,
                         horizon: int = 16, iterations: int = 6) -> list[float]:
    """Seconds per plan of pytorch_mppi's MPPI over the same world model and cost terms.

    Its state is the latent with the summed actions beside it, its dynamics the model's latent
    step, and its running cost the outcomes ``imagine`` composes (reward
    and success from the imagined geometry, collision with the tool path), discounted as ours,
    with the Q ensemble after the horizon as its terminal cost when the value weight is set;
    one plan is ``iterations`` refinements of one command.
    """
    import torch
    try:
        from pytorch_mppi import MPPI
    except ImportError as e:
        raise ValueError("--vs pytorch_mppi needs pytorch_mppi: pip install pytorch-mppi "
                         "(it is in robotworld's dev extra)") from e

    from robotworld.model.priors import touched

    w, start = cost.w, cost.situation.start
    temb = start.task
    tk = temb.expand(samples, -1)
    A, L = env.action_space.shape[0], model.cfg.latent_dim
    z_start = start.latent.expand(samples, -1)
    first = model.read(start.latent, temb)["object_pos"][:, None, :1]  # at the start, (1, 1, 1, 3)
    obj_start = start.objects[:, :1]

    # its state is the latent with the summed actions beside it (the tool path reads both)
    def dynamics(x, u):
        return torch.cat((model.next(x[:, :L], u, tk[:len(x)]), x[:, L:] + u), -1)

    def running_cost(x, u, t):
        # the outcomes of one imagined step from its state, as WorldModel.imagine composes them
        # (the peer's form: a state, not a sequence), with the touch gate and without the
        # gripper's, which needs the sequence
        z, n = x[:, None, :L], len(x)
        heads = model.read(z, tk[:n])
        tool = model.tool_path(z_start[:n], z, x[:, None, L:], start.tool)  # (n, 1, 3)
        moved = torch.sigmoid(model.moved_logits(z_start[:n], z)[..., :1]) * touched(tool.transpose(0, 1),
                                                                                        obj_start)[0, :, None]
        obj = (obj_start[:, None] + moved[..., None] * (heads["object_pos"][:, :, :1] - first))[:, :, 0]
        grasp = model.grasp_prob(heads["grasp"], tool, obj)
        collision = torch.sigmoid(heads["collision"] + model.contact_logit(tool))
        reward, success = model.outcomes(tool, obj, start.goal[:, None].expand_as(tool), grasp, tk[:n])
        gain = w.reward * reward + w.success * torch.sigmoid(success)
        return (w.gamma ** t * -gain + w.collision * collision)[:, 0]

    def terminal(states, actions):
        z, a = states[0, :, -1, :L], actions[0, :, -1]
        return -w.value * w.gamma ** horizon * model.q_values(z, a, tk[:len(z)]).mean(0)

    # step-dependent, so that the running cost gets the step index for the discount
    ctl = MPPI(lambda x, u, t: dynamics(x, u), running_cost, L + A,
               noise_sigma=0.25 * torch.eye(A, device=device), num_samples=samples,
               horizon=horizon, device=device, terminal_state_cost=terminal if w.value else None, lambda_=0.5,
               u_min=torch.as_tensor(env.action_space.low, device=device),
               u_max=torch.as_tensor(env.action_space.high, device=device),
               step_dependent_dynamics=True)
    z0 = torch.cat((start.latent[0], torch.zeros(A, device=device)))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for k in range(plans + 2):
            sync()
            t0 = time.perf_counter()
            for i in range(iterations):
                ctl.command(z0, shift_nominal_trajectory=(i == 0))
            sync()
            if k >= 2:
                times.append(time.perf_counter() - t0)
    return times


def _linear_macs(module) -> int:
    from torch import nn

    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def bench_planner(cfg: PlannerBenchConfig) -> dict:
    """plan_ms p50 / p95 at each setting (by default 1024x16x6, 512x16x6 and 256x8x4), and
    flops_fraction at the first."""
    import torch

    import sims
    from robotworld.device import pick_device
    from robotworld.model import checkpoint as ckpt
    from robotworld.planning import Planner, PlannerConfig, WorldModelCost
    from robotworld.planning.costs import stack_observations

    settings = parse_settings(cfg.settings)
    if cfg.batch_envs < 0:
        raise ValueError(f"batch_envs = {cfg.batch_envs}: expected 0 (off) or a number of environments")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    model = ckpt.load(cfg.checkpoint, device)
    env = sims.make(cfg.task)
    obs, _ = env.reset(seed=0)
    cost = WorldModelCost(model)
    cost.observe(obs, cfg.task)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # multiply-adds per imagined transition on the cost's path (WorldModel.imagine, objects="first"):
    # the dynamics, the heads' hidden layer with the five outputs it reads (grasp, collision,
    # first object), the per-step shares of the moved gate and the tool path (their z_0 share is
    # computed once a plan), the contact, hold and outcome MLPs
    hidden, out_layer = model.heads[0], model.heads[-1]
    L, A = model.cfg.latent_dim, model.spec.action_dim
    macs = (_linear_macs(model.dynamics) + hidden.in_features * hidden.out_features
            + out_layer.in_features * 5 + model.moved[0].out_features * L + model.moved[-1].in_features
            + model.tool[0].out_features * (L + A) + _linear_macs(model.tool[-1])
            + _linear_macs(model.contact) + _linear_macs(model.hold) + _linear_macs(model.outcome))
    out: dict = {"device": str(device), "torch_threads": torch.get_num_threads(), "method": cfg.method,
                 "macs_per_transition": macs, "tf32": cfg.tf32, "compile": cfg.compile}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)

    def timed(p) -> list[float]:
        times = []
        for k in range(cfg.plans + 2):
            sync()
            t0 = time.perf_counter()
            p.plan()
            sync()
            if k >= 2:
                times.append(time.perf_counter() - t0)
        return times

    def planner(c, S, H, it, envs=None):
        return Planner(c, env.action_space.low, env.action_space.high,
                       PlannerConfig(method=cfg.method, samples=S, horizon=H, iterations=it,
                                     compile=cfg.compile), device, envs=envs)

    for S, H, it in settings:
        times = timed(planner(cost, S, H, it))
        tag = f"{S}x{H}x{it}"
        out[f"plan_ms_p50_{tag}"] = round(float(np.median(times)) * 1e3, 2)
        out[f"plan_ms_p95_{tag}"] = round(float(np.percentile(times, 95)) * 1e3, 2)
        if (S, H, it) == settings[0]:
            out["plan_ms_p50"], out["plan_ms_p95"] = out[f"plan_ms_p50_{tag}"], out[f"plan_ms_p95_{tag}"]
            planner_flops = 2 * macs * S * H * it / float(np.median(times))
    if cfg.batch_envs:
        E = cfg.batch_envs
        many = WorldModelCost(model)
        many.observe(stack_observations([env.reset(seed=k)[0] for k in range(E)]), cfg.task)
        times = timed(planner(many, *settings[0], envs=E))
        out["batch_envs"] = E
        out["batch_plan_ms_p50"] = round(float(np.median(times)) * 1e3, 2)
        out["batch_plan_ms_p95"] = round(float(np.percentile(times, 95)) * 1e3, 2)
        out["batch_plans_per_s"] = round(1.0 / float(np.median(times)), 1)
    matmul_flops = _matmul_flops(model.cfg.hidden_dim, device)
    if cfg.vs == "pytorch_mppi":
        peer = _pytorch_mppi_plan_s(model, cost, env, device, cfg.plans, *settings[0])  # the headline's shape
        out["pytorch_mppi_plan_ms_p50"] = round(float(np.median(peer)) * 1e3, 2)
        out["pytorch_mppi_plan_ms_p95"] = round(float(np.percentile(peer, 95)) * 1e3, 2)
        out["ratio_vs_pytorch_mppi"] = round(float(np.median(peer)) / (out["plan_ms_p50"] / 1e3), 3)
    elif cfg.vs:
        raise ValueError(f"--vs {cfg.vs}: expected pytorch_mppi")
    out["planner_gflops"] = round(planner_flops / 1e9, 2)
    out["matmul_gflops"] = round(matmul_flops / 1e9, 2)
    out["flops_fraction"] = round(planner_flops / matmul_flops, 3)
    return out


@dataclass
class CollisionBenchConfig:
    """Learned collision predictor against the exact checker on held-out scenes."""

    checkpoint: str = "default"
    """Collision-predictor checkpoint ('default': the shipped one)."""
    queries: int = 200_000
    """Held-out queries for recall and precision (16 poses per scene)."""
    speed_queries: int = 262_144
    """Queries timed for each checker, all in one scene (a planner's case)."""
    chunk: int = 4096
    """Queries per torch call of the learned predictor."""
    seed: int = 0
    """Seed of the held-out scenes (a stream training never draws from)."""
    device: str = "auto"
    """Device of the learned predictor: auto, cpu or cuda."""


def bench_collision(cfg: CollisionBenchConfig) -> dict:
    """recall / precision at the operating threshold, and queries/s of both checkers."""
    import torch

    from robotworld.collision import train as ctrain
    from robotworld.collision.exact import ExactChecker
    from robotworld.device import pick_device

    device = pick_device(cfg.device)
    model = ctrain.load(cfg.checkpoint, device)
    checker = ExactChecker(max_obstacles=model.cfg.max_obstacles)
    # training draws from streams [seed, 0] and [seed, 1]; these scenes come from [seed, 2]
    q, scenes, labels = ctrain.labelled(np.random.default_rng([cfg.seed, 2]), cfg.queries, checker)
    out: dict = {"device": str(device), "held_out_queries": cfg.queries,
                 "held_out_scenes": -(-cfg.queries // 16),
                 "thresholds": [round(float(t), 4) for t in model.threshold.cpu()]}
    out.update(ctrain.evaluate(model, q, scenes, labels, device))

    sq, sscenes = ctrain.sample_queries(np.random.default_rng([cfg.seed, 3]), cfg.speed_queries)
    scene = sscenes[0]
    checker.check(sq[:cfg.chunk], scene)  # warm-up
    t0 = time.perf_counter()
    checker.check(sq, scene)
    exact_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    qt = torch.as_tensor(sq, dtype=torch.float32, device=device)
    st = torch.as_tensor(scene, dtype=torch.float32, device=device)
    chunk = cfg.chunk if device.type == "cpu" else len(qt)
    with torch.inference_mode():
        model.logits(qt[:chunk], st)  # warm-up
        sync()
        t0 = time.perf_counter()
        for lo in range(0, len(qt), chunk):
            model.predict(qt[lo:lo + chunk], st)
        sync()
        learned_s = time.perf_counter() - t0
    out["exact_threads"] = checker.nthread
    out["torch_threads"] = torch.get_num_threads()
    out["exact_queries_per_s"] = round(cfg.speed_queries / exact_s, 1)
    out["learned_queries_per_s"] = round(cfg.speed_queries / learned_s, 1)
    out["learned_vs_exact"] = round(exact_s / learned_s, 3)
    return out
