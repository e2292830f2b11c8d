"""Parallel rollout collection into a durable dataset: ``robotworld collect``.

Usage:

    robotworld collect --task pick_place --policy noisy-expert --episodes 2000 --workers 2 \\
        --out data/pick_place
    robotworld collect --task lift --policy expert --episodes 200 --cameras front,wrist --out data/lift
    robotworld collect ... --backend ray [--ray-address auto]

Episode k is reset with seed + k and its policy is seeded with the same number, so a command
gives the same dataset whatever the number of workers or backend. Workers roll episodes out and
encode each into the bytes of its HDF5 file; the driver alone publishes them, each by an atomic
rename, so a killed run leaves only whole episodes. Running the same command again resumes:
episodes already published are skipped, the rest are collected.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robotworld.data import format as fmt
from robotworld.policy import Policy, Scene


@dataclass
class CollectConfig:
    """One collection run."""

    task: str = "pick_place"
    """Task to collect (reach, push, lift, pick_place, pick_place_clutter)."""
    policy: str = "noisy-expert"
    """Behaviour policy: expert, noisy-expert, fumbling-expert (noisy, and its gripper command
    inverted in short spells), random, zero, mpc, or a world-model checkpoint (PATH.pt or
    mpc:PATH) that the MPC planner acts with."""
    episodes: int = 100
    """Episodes the dataset should hold when the run ends (indices 0 .. episodes-1)."""
    workers: int = 1
    """Parallel workers (processes, or Ray tasks with --backend ray)."""
    out: str = "data/pick_place"
    """Dataset directory; created if missing, resumed if it holds the same collection."""
    cameras: str = ""
    """Comma-separated cameras to record (front, wrist); empty records state only."""
    seed: int = 0
    """Seed of episode 0; episode k uses seed + k for the scene and the policy."""
    sim: str = "mujoco"
    """Physics engine: mujoco or pybullet."""
    backend: str = "process"
    """process (local worker processes) or ray (a Ray cluster; local when no address)."""
    ray_address: str | None = None
    """Address of a running Ray cluster for --backend ray; none starts a local one."""
    retries: int = 2
    """Times an episode whose worker failed or crashed is retried before it is reported."""
    device: str = "cpu"
    """Where an MPC policy's world model runs in each worker: cpu, cuda or auto."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if isinstance(self.cameras, (list, tuple)):
            self.cameras = ",".join(self.cameras)

    def camera_list(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.cameras.split(",") if c.strip())


@dataclass
class CollectResult:
    out: str
    episodes: int
    collected: int
    skipped: int
    failed: dict[int, str]
    transitions: int
    seconds: float
    transitions_per_s: float
    success_rate: float


# ---- the worker side ---------------------------------------------------------------------------
_ENV: dict[str, Any] = {}


def _env(spec: dict[str, Any]):
    import sims

    # Each worker owns one core: Mesa's software rasteriser would otherwise start a thread per
    # core in every worker and oversubscribe the machine (measured: 1.73x -> 1.94x for 2 workers).
    os.environ.setdefault("LP_NUM_THREADS", "1")
    key = json.dumps(spec, sort_keys=True)
    if key not in _ENV:
        for env in _ENV.values():
            env.close()
        _ENV.clear()
        _ENV[key] = sims.make(spec["task"], sim=spec["sim"], **spec["overrides"])
    return _ENV[key]


def rollout(spec: dict[str, Any], index: int, make: Callable[..., Policy]) -> tuple[int, bytes, dict[str, Any]]:
    """Roll out episode ``index`` with the policy ``make(seed=...)`` builds (a picklable
    callable: it runs in the worker) and encode it. Returns (index, HDF5 file bytes, summary)."""
    env = _env(spec)
    seed = spec["seed"] + index
    policy = make(seed=seed)
    obs, _ = env.reset(seed=seed)
    policy.reset(None, Scene.of(env))
    keys = [k for k in obs if k != "instruction"]
    frames: dict[str, list[np.ndarray]] = {k: [obs[k]] for k in keys}
    steps: dict[str, list] = {k: [] for k in fmt.STEP_FIELDS}
    labels: list[np.ndarray] = []
    done = False
    while not done:
        chunk = policy.act(obs)
        label = (getattr(policy, "last_info", None) or {}).get("label")  # a teacher's clean chunk (DART)
        for t, a in enumerate(chunk):
            if label is not None:
                labels.append(label[t])
            obs, reward, term, trunc, info = env.step(a)
            for k in keys:
                frames[k].append(obs[k])
            for k, v in (("action", a), ("reward", reward), ("terminated", term),
                         ("truncated", trunc), ("is_success", info["is_success"]),
                         ("is_grasped", info["is_grasped"]), ("collision", info["collision"])):
                steps[k].append(v)
            done = term or trunc
            if done:
                break
    arrays = {f"obs/{k}": np.stack(v) for k, v in frames.items()}
    arrays["action"] = np.clip(np.asarray(steps["action"], np.float32), -1.0, 1.0)  # as applied
    if labels and len(labels) == len(steps["action"]):
        arrays["label"] = np.clip(np.asarray(labels, np.float32), -1.0, 1.0)
    arrays["reward"] = np.asarray(steps["reward"], np.float32)
    for k in ("is_success", "is_grasped", "collision", "terminated", "truncated"):
        arrays[k] = np.asarray(steps[k], bool)
    summary = {"index": index, "seed": seed, "length": len(steps["action"]),
               "success": bool(arrays["is_success"].any()),
               "grasped": bool(arrays["is_grasped"].any()),
               "collided": bool(arrays["collision"].any())}
    attrs = dict(summary, task=spec["task"], policy=spec["policy"], sim=spec["sim"],
                 instruction=env.unwrapped.episode.instruction)
    return index, fmt.encode_episode(arrays, attrs), summary


# ---- backends: each yields (index, payload or None, error or None) as episodes finish ---------
Outcome = tuple[int, "tuple[bytes, dict] | None", "str | None"]


_WATCHDOG_S = 5.0  # seconds without a finished episode before the workers' liveness is checked


def _a_worker_died(pool) -> bool:
    """Whether any of the pool's worker processes has exited (ProcessPoolExecutor keeps them in
    ``_processes``; there is no public accessor)."""
    procs = getattr(pool, "_processes", None) or {}
    return any(p.exitcode is not None for p in list(procs.values()))


def _close_pool(pool, broken: bool) -> None:
    """Shut a ProcessPoolExecutor down; a broken one (a worker died) without waiting, its
    workers killed.

    A worker killed mid-write leaves the pool's manager thread reading the rest of its message,
    and the interpreter joins that thread at exit: the command hung after its work was done.
    With every worker killed, this process holds the result pipe's last write end, and closing
    it ends that read (tests/test_data.py).
    """
    writer = None
    if broken:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.kill()
        writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    pool.shutdown(wait=not broken, cancel_futures=True)
    if writer is not None:
        writer.close()


def _process_backend(spec: dict, make: Callable[..., Policy], todo: list[int], workers: int,
                     retries: int) -> Iterator[Outcome]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    queue, attempts = list(reversed(todo)), {i: 0 for i in todo}
    while queue:
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
        running: dict = {}
        broken = False
        try:
            while (queue or running) and not broken:
                while queue and len(running) < 2 * workers:
                    try:
                        fut = pool.submit(rollout, spec, queue[-1], make)
                    except BrokenProcessPool:  # a worker died before we saw a failed future
                        broken = True
                        break
                    running[fut] = queue.pop()
                if broken:
                    break
                finished, _ = wait(running, timeout=_WATCHDOG_S, return_when=FIRST_COMPLETED)
                if not finished and _a_worker_died(pool):
                    # A worker killed mid-write can leave the pool's result pipe holding half a
                    # message, and the pool then waits on it forever instead of reporting the
                    # death; noticing the dead process ourselves turns that hang into a retry.
                    broken = True
                    break
                for fut in finished:
                    i = running.pop(fut)
                    try:
                        _, payload, summary = fut.result()
                        yield i, (payload, summary), None
                    except BrokenProcessPool:
                        broken = True
                        running[fut] = i  # requeued with the rest below
                    except Exception as e:  # the episode raised in the worker
                        attempts[i] += 1
                        if attempts[i] > retries:
                            yield i, None, f"{type(e).__name__}: {e}"
                        else:
                            queue.append(i)
        finally:
            _close_pool(pool, broken)
        if broken:  # a worker died (killed, segfault): every episode in flight is retried
            for i in running.values():
                attempts[i] += 1
                if attempts[i] > retries:
                    yield i, None, "worker process died during the episode"
                else:
                    queue.append(i)


def _ray_backend(spec: dict, make: Callable[..., Policy], todo: list[int], workers: int, retries: int,
                 address: str | None) -> Iterator[Outcome]:
    try:
        import ray
    except ImportError as e:
        raise fmt.DatasetError("--backend ray needs Ray: pip install 'robotworld[ray]'") from e
    started = not ray.is_initialized()
    if started:
        kw: dict[str, Any] = {"address": address} if address else {"num_cpus": workers}
        ray.init(include_dashboard=False, log_to_driver=False, **kw)
    task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(rollout)
    queue, running = list(reversed(todo)), {}
    try:
        while queue or running:
            while queue and len(running) < 2 * workers:
                i = queue.pop()
                running[task.remote(spec, i, make)] = i
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                i = running.pop(ref)
                try:
                    _, payload, summary = ray.get(ref)
                    yield i, (payload, summary), None
                except Exception as e:  # retries exhausted
                    yield i, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        if started:
            ray.shutdown()


# ---- the driver --------------------------------------------------------------------------------
def _spec(cfg: CollectConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    over = dict(overrides)
    if cfg.camera_list():
        over["cameras"] = list(cfg.camera_list())
    spec = {"task": cfg.task, "sim": cfg.sim, "policy": cfg.policy, "seed": cfg.seed,
            "overrides": over}
    return json.loads(json.dumps(spec))  # tuples become lists, as in the manifest


def _check_config(cfg: CollectConfig) -> None:
    if cfg.episodes < 1:
        raise ValueError(f"episodes = {cfg.episodes}: expected at least 1")
    if cfg.workers < 1:
        raise ValueError(f"workers = {cfg.workers}: expected at least 1")
    if cfg.retries < 0:
        raise ValueError(f"retries = {cfg.retries}: expected 0 or more")
    if cfg.backend not in ("process", "ray"):
        raise ValueError(f"backend = '{cfg.backend}': expected 'process' or 'ray'")


def _observation_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """What the env's observation and action look like (and a check of the overrides)."""
    import sims

    env = sims.make(spec["task"], sim=spec["sim"], **spec["overrides"])
    u = env.unwrapped
    obs = {k: {"shape": list(s.shape), "dtype": str(s.dtype)}
           for k, s in env.observation_space.spaces.items() if k != "instruction"}
    out = {"observation": obs, "action_dim": int(env.action_space.shape[0]),
           "control_hz": u.cfg.control_hz, "num_objects": u.nobj,
           "task_config": json.loads(json.dumps(asdict(u.cfg), default=list))}
    env.close()
    return out


def prepare(root: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Create the dataset directory, or check that it holds this same collection."""
    if (root / fmt.MANIFEST).exists():
        manifest = fmt.read_manifest(root)
        theirs = manifest.get("collection", {})
        diff = [f"{k}: {theirs.get(k)!r} there, {spec[k]!r} asked" for k in spec if theirs.get(k) != spec[k]]
        if diff:
            raise fmt.DatasetError(f"'{root}' holds a different collection ({'; '.join(diff)}); "
                                   "rerun with the same settings to resume, or choose another --out")
        return manifest
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise fmt.DatasetError(f"'{root}' exists and is not a robotworld dataset; choose a new or "
                               "empty directory for --out")
    root.mkdir(parents=True, exist_ok=True)  # empty until the manifest lands: safe to reuse
    manifest = {"task": spec["task"], "sim": spec["sim"], "policy": spec["policy"],
                "cameras": spec["overrides"].get("cameras", []), "collection": spec,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **_observation_spec(spec)}
    fmt.write_manifest(root, manifest)
    return fmt.read_manifest(root)


def _episode_dir(root: Path) -> None:
    (root / fmt.EPISODES).mkdir(exist_ok=True)


def _sweep_temporaries(episode_dir: Path) -> None:
    """Remove what a killed writer left: temporary files never became episodes."""
    for name in os.listdir(episode_dir):
        if name.startswith(".") and ".tmp-" in name:
            (episode_dir / name).unlink(missing_ok=True)


def collect(cfg: CollectConfig, make: Callable[..., Policy], on_episode: Callable[[int], None] | None = None,
            **overrides: Any) -> CollectResult:
    """Collect (or finish collecting) ``cfg.episodes`` episodes into ``cfg.out``.

    Args:
        cfg: the run; ``cfg.policy`` names the policy in the dataset's manifest.
        make: builds the policy in each worker, ``make(seed=episode_seed)``; picklable (a
            module-level function or a functools.partial of one, such as
            ``partial(policies.make_policy, cfg.policy)``).
        on_episode: called with each episode index once it is published.
        overrides: task config fields.
    """
    from tqdm import tqdm

    from robotworld.data.dataset import Dataset

    _check_config(cfg)
    spec = _spec(cfg, overrides)
    root = Path(cfg.out)
    prepare(root, spec)
    _episode_dir(root)
    ds = Dataset(root)
    _sweep_temporaries(ds.episode_dir)
    have = set(ds.indices())
    todo = [i for i in range(cfg.episodes) if i not in have]
    if cfg.backend == "ray":
        outcomes: Iterable[Outcome] = _ray_backend(spec, make, todo, cfg.workers, cfg.retries, cfg.ray_address)
    else:
        outcomes = _process_backend(spec, make, todo, cfg.workers, cfg.retries)
    bar = tqdm(total=len(todo), desc=f"collect {cfg.task}/{cfg.policy}", unit="ep",
               disable=not cfg.progress)
    failed: dict[int, str] = {}
    transitions = wins = done = 0
    t0 = time.perf_counter()
    try:
        for i, payload, error in outcomes:
            if error is not None:
                failed[i] = error
                bar.write(f"episode {i} failed: {error}")
                continue
            data, summary = payload
            fmt.atomic_write_bytes(ds.path(i), data)
            done += 1
            transitions += summary["length"]
            wins += summary["success"]
            bar.update(1)
            bar.set_postfix(trans_s=f"{transitions / (time.perf_counter() - t0):.0f}",
                            success=f"{wins / done:.0%}")
            if on_episode is not None:
                on_episode(i)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    return CollectResult(str(root), cfg.episodes, done, len(have), failed, transitions,
                         round(elapsed, 3), round(transitions / elapsed, 1) if elapsed > 0 else 0.0,
                         wins / done if done else 0.0)
