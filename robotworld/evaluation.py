"""Policy evaluation: seeded episodes, success with a 95% interval, optional videos."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from robotworld.policy import Policy, Scene
from robotworld.stats import wilson_interval


@dataclass
class EvalConfig:
    """One evaluation run."""

    task: str = "pick_place"
    """Task name (see ``robotworld eval --help``)."""
    policy: str = "expert"
    """Policy: expert, noisy-expert, fumbling-expert, random, zero, mpc (MPPI over the shipped
    world model, 1,024 x 16 x 6), mpc-fast (the same at 128 x 8 x 3: control rate on two CPU
    cores), or a world-model checkpoint PATH.pt / mpc:PATH to plan with; MPC names take
    options: mpc-fast,collision=0,touch=false."""
    episodes: int = 100
    """Number of episodes; episode k is reset with seed + k, and the policy's randomness (a
    planner's noise, a noisy expert's) restarts from that seed too, so any episode replays the
    same alone (--seed S --episodes 1)."""
    seed: int = 0
    """First episode seed."""
    sim: str = "mujoco"
    """Physics engine: mujoco or pybullet."""
    video: str | None = None
    """Directory for mp4 videos of the first ``video_episodes`` episodes."""
    video_episodes: int = 1
    """How many episodes to record when ``video`` is set."""
    batch: int = 1
    """Episodes run side by side, their next actions planned in one batched call a step
    (MPC policies; the way to evaluate on a GPU). Each is still seeded seed + k; the planner's
    noise is shared, so the figures differ from batch 1's but are as reproducible."""
    device: str = "auto"
    """Where a policy's model runs: auto (cuda when there is one), cpu or cuda."""
    paraphrases: str | None = None
    """A file of instruction templates, one per line (blank lines and # comments skipped), with
    {object} (e.g. "red cube") and {target} (e.g. "blue zone") placeholders: each episode's
    instruction is replaced by one of them, drawn from its seed (unseen phrasings)."""
    out: str | None = None
    """A folder for an evaluation of several policies, tasks and engines (comma lists: --policy
    expert,vla --task lift,pick_place --sim both): episodes.jsonl, results.json with the paired
    comparisons, report.md; the same command resumes a killed run (``robotworld.suite``).
    Several names without it write to runs/eval."""
    perturb: str | None = None
    """Perturbations, each an arm beside the unperturbed one on the same seeds (an evaluation
    folder): size=S (objects scaled), latency=K (control steps), distractors=N, obstacles=N;
    several values of one key make a sweep, size=0.8:1:1.2 (``robotworld.perturb``)."""
    workers: int = 0
    """Worker processes for an evaluation folder (0: one per CPU core); each episode runs on one
    torch thread, so the results are the same with any number."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class EvalResult:
    task: str
    policy: str
    sim: str
    episodes: int
    seeds: list[int]
    success_rate: float
    success_ci95: list[float]
    collision_rate: float
    mean_episode_steps: float
    videos: list[str]
    collisions_per_episode: float = 0.0
    """Mean number of steps with a collision per episode (collision_rate counts episodes)."""
    grasp_rate: float = 0.0
    """Fraction of episodes in which the object was held (``is_grasped``) at some step: with
    the success rate, it tells a plan that never grasps from one that drops what it held."""
    per_episode: list[dict] = field(default_factory=list)
    """One entry per episode, in seed order: seed, success, steps, collision_steps, grasp_steps,
    link_contact_steps."""
    policy_stats: dict = field(default_factory=dict)
    """Counts the policy kept over the run, summed over the episodes (``episode_stats``; for
    vla+imagine the decisions and those MPC's refinement took), empty for other policies."""
    link_contacts_per_episode: float = 0.0
    """Mean number of steps per episode in which an arm link (link1-link7, not the hand or the
    fingers) touched the table or an obstacle: what the whole-arm cost term is for."""


def file_name(text: str) -> str:
    """text as one file name: runs of anything but letters, digits, '.', '_' and '-' become '_'
    (a policy named 'mpc:runs/x.pt,preset=fast' makes no folders)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "policy"


def write_video(frames: list[np.ndarray], path: Path, fps: int = 20) -> None:
    """Write frames to an mp4 atomically (temporary name, then rename)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.mp4")
    try:
        with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7,
                                macro_block_size=8) as w:
            for f in frames:
                w.append_data(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_paraphrases(path: str | None) -> list[str]:
    """The templates of a paraphrase file; ValueError naming the file and line if one is unusable."""
    if path is None:
        return []
    import string

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"paraphrases file '{path}' does not exist")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(line) if f is not None}
        except ValueError as e:
            raise ValueError(f"{path}:{n}: '{line}' is not a template ({e})") from None
        if not names <= {"object", "target"}:
            raise ValueError(f"{path}:{n}: '{line}' has placeholders {sorted(names - {'object', 'target'})}; "
                             "expected only {object} and {target}")
        out.append(line)
    if not out:
        raise ValueError(f"paraphrases file '{path}' holds no template")
    return out


def paraphrase(templates: list[str], task: str, episode, seed: int) -> str:
    """The episode's instruction rewritten with one of the templates, drawn from its seed."""
    from sims.tasks import instruction_slots

    template = templates[int(np.random.default_rng([seed, 7]).integers(len(templates)))]
    slots = instruction_slots(task, episode)
    try:
        return template.format(**slots)
    except KeyError as e:
        raise ValueError(f"paraphrase '{template}' names {{{e.args[0]}}}, which task {task} does not have "
                         f"(it has {', '.join('{' + k + '}' for k in slots) or 'no placeholder'})") from None


def _frame(env, instruction: str, status: str, imagined: dict | None) -> np.ndarray:
    """One video frame: the video camera's view with what the policy imagined drawn on it."""
    from robotworld.overlay import draw
    from sims.scene import SHOWCASE_SIZE

    return draw(env.unwrapped.physics.render("showcase", *SHOWCASE_SIZE), instruction, status, imagined)


def run_episode(env, policy: Policy, seed: int, record: bool = False, paraphrases: list[str] | None = None):
    """One episode. Returns (success, collision steps, steps, frames, grasp steps, link contact
    steps: those where an arm link, not the gripper, touched the table or an obstacle).
    paraphrases: templates that replace the episode's instruction (``paraphrase``)."""
    obs, info = env.reset(seed=seed)
    text = None
    if paraphrases:
        text = paraphrase(paraphrases, env.unwrapped.cfg.task, env.unwrapped.episode, seed)
        obs = {**obs, "instruction": text}
    policy.reset(seed, Scene.of(env))
    instruction = obs.get("instruction", "")
    frames = [_frame(env, instruction, "step 0", None)] if record else []
    success = False
    steps = collisions = held = links = 0
    done = False
    while not done:
        chunk = policy.act(obs)
        imagined = getattr(policy, "last_info", None)
        for a in chunk:
            obs, _, terminated, truncated, info = env.step(a)
            if text is not None:
                obs = {**obs, "instruction": text}
            steps += 1
            collisions += bool(info["collision"])
            links += bool(info["collision"]) and env.unwrapped.physics.link_contact()
            held += bool(info.get("is_grasped", False))
            success |= bool(info["is_success"])
            if record:
                state = "success" if success else ("holding the object" if info.get("is_grasped") else "")
                status = f"step {steps}  {state}" + ("  COLLISION" if info["collision"] else "")
                if imagined and imagined.get("reason"):
                    status += f"  |  {imagined['reason']}"
                frames.append(_frame(env, instruction, status, imagined))
            done = terminated or truncated
            if done:
                break
    return success, collisions, steps, frames, held, links


def evaluate(cfg: EvalConfig, policy: Policy, **overrides) -> EvalResult:
    """Run ``cfg.episodes`` seeded episodes of ``policy`` on a task; ``cfg.policy`` names it in
    the report (``robotworld eval`` makes it with ``policies.make_policy(cfg.policy)``).
    overrides: task config fields."""
    from tqdm import tqdm

    import sims

    if cfg.episodes < 1:
        raise ValueError(f"episodes = {cfg.episodes}: expected at least 1")
    if cfg.batch < 1:
        raise ValueError(f"batch = {cfg.batch}: expected at least 1")
    if cfg.video is not None:
        from robotworld.paths import writable_dir

        writable_dir(cfg.video, "video directory")
    paraphrases = read_paraphrases(cfg.paraphrases)
    if paraphrases and cfg.batch > 1:
        raise ValueError("paraphrases are applied one episode at a time: use batch = 1 with paraphrases")
    # what the policy's observations need (the VLA's cameras), under the user's own overrides
    overrides = {**getattr(policy, "env_overrides", {}), **overrides}
    env = sims.make(cfg.task, sim=cfg.sim, **overrides)
    if cfg.batch > 1:
        if not hasattr(policy, "act_batch"):
            raise ValueError(f"batch = {cfg.batch}: policy '{cfg.policy}' plans one environment at a time; "
                             "batched evaluation needs an MPC policy (mpc, PATH.pt or mpc:PATH)")
        if cfg.video is not None:
            raise ValueError("video is recorded one episode at a time: use batch = 1 with video")
        return _evaluate_batched(cfg, env, policy, overrides)
    rows, videos, stats = [], [], []
    bar = tqdm(range(cfg.episodes), desc=f"{cfg.task}/{cfg.policy}/{cfg.sim}",
               disable=not cfg.progress, leave=False)
    for k in bar:
        record = cfg.video is not None and k < cfg.video_episodes
        ok, n_hits, steps, frames, held, links = run_episode(env, policy, cfg.seed + k, record, paraphrases)
        rows.append((int(ok), n_hits, steps, held, links))
        stats.append(dict(getattr(policy, "episode_stats", None) or {}))
        if record:
            path = Path(cfg.video) / f"{cfg.task}_{cfg.sim}_{file_name(cfg.policy)}_seed{cfg.seed + k}.mp4"
            write_video(frames, path)
            videos.append(str(path))
        bar.set_postfix(success=f"{sum(r[0] for r in rows)}/{k + 1}")
    env.close()
    result = _result(cfg, rows, videos)
    if any(stats):  # what the policy counted per episode (vla+imagine: decisions, those MPC took)
        for entry, st in zip(result.per_episode, stats):
            entry.update(st)
        result.policy_stats = {k: sum(st.get(k, 0) for st in stats) for k in stats[0]}
    return result


def _result(cfg: EvalConfig, rows: list[tuple[int, int, int, int, int]], videos: list[str]) -> EvalResult:
    """rows: (success, collision steps, steps, grasp steps, link contact steps) per episode, in seed order."""
    wins = sum(r[0] for r in rows)
    lo, hi = wilson_interval(wins, cfg.episodes)
    return EvalResult(cfg.task, cfg.policy, cfg.sim, cfg.episodes,
                      [cfg.seed, cfg.seed + cfg.episodes - 1], wins / cfg.episodes,
                      [round(lo, 4), round(hi, 4)], sum(r[1] > 0 for r in rows) / cfg.episodes,
                      float(np.mean([r[2] for r in rows])), videos,
                      sum(r[1] for r in rows) / cfg.episodes, sum(r[3] > 0 for r in rows) / cfg.episodes,
                      [{"seed": cfg.seed + k, "success": bool(ok), "steps": int(n), "collision_steps": int(c),
                        "grasp_steps": int(g), "link_contact_steps": int(lk)}
                       for k, (ok, c, n, g, lk) in enumerate(rows)],
                      link_contacts_per_episode=sum(r[4] for r in rows) / cfg.episodes)


def _evaluate_batched(cfg: EvalConfig, env, policy, overrides: dict) -> EvalResult:
    """``cfg.batch`` episodes side by side, one batched plan a step; a slot whose episode ends
    takes the next seed. Slots left without an episode near the end are planned for (the batch's
    shape is fixed) but not stepped."""
    from tqdm import tqdm

    import sims

    E = min(cfg.batch, cfg.episodes)
    envs = [env] + [sims.make(cfg.task, sim=cfg.sim, **overrides) for _ in range(E - 1)]
    policy.reset_batch(Scene.of(env), E)
    episode: list[int | None] = [None] * E  # the episode each slot runs
    obs: list[dict] = [{}] * E
    tally = np.zeros((E, 5), dtype=np.int64)  # success, collision steps, steps, grasp steps, link contact steps
    done: dict[int, tuple[int, int, int, int]] = {}
    started = 0
    bar = tqdm(total=cfg.episodes, desc=f"{cfg.task}/{cfg.policy}/{cfg.sim} x{E}", disable=not cfg.progress,
               leave=False)

    def start(e: int) -> None:
        nonlocal started
        if started == cfg.episodes:
            episode[e] = None
            return
        episode[e], started = started, started + 1
        obs[e], _ = envs[e].reset(seed=cfg.seed + episode[e])
        policy.reset_env(e, Scene.of(envs[e]))
        tally[e] = 0

    for e in range(E):
        start(e)
    while any(k is not None for k in episode):
        actions = policy.act_batch(obs)
        for e in range(E):
            if episode[e] is None:
                continue
            obs[e], _, terminated, truncated, info = envs[e].step(actions[e])
            tally[e] += (bool(info["is_success"]) and not tally[e, 0], bool(info["collision"]), 1,
                         bool(info.get("is_grasped", False)),
                         bool(info["collision"]) and envs[e].unwrapped.physics.link_contact())
            if terminated or truncated:
                done[episode[e]] = tuple(int(v) for v in tally[e])
                bar.update()
                bar.set_postfix(success=f"{sum(d[0] for d in done.values())}/{len(done)}")
                start(e)
    bar.close()
    for e in envs:
        e.close()
    return _result(cfg, [done[k] for k in range(cfg.episodes)], [])


def as_dict(result: EvalResult) -> dict:
    return asdict(result)
