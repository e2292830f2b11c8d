"""The VLA policy, and the VLA that imagines before it acts (``--policy vla``, ``vla+imagine``).

    from policies.vla import ImagineConfig, ImaginePolicy, VLAConfig, VLAPolicy
    policy = VLAPolicy(VLAPolicyConfig())                   # robotworld/checkpoints/vla.pt
    policy.reset(seed, Scene.of(env)); chunk = policy.act(obs)   # (execute, A)
    chunks = policy.sample(obs, 16)                          # (16, H, A) distinct proposals

    imagine = ImaginePolicy(ImagineConfig(candidates=16, state="estimated"))
    chunk = imagine.act(obs); imagine.last_info              # candidates, imagined outcomes, choice, reason

The VLA sees what a robot sees: the front and wrist cameras, proprioception and the
instruction; never the object or zone positions. ``vla+imagine`` samples k chunks from it,
scores them in one batch with the world model (``robotworld.planning.costs.Scorer``) and executes
the best one that imagines no collision, keeps its clearance and keeps a held object; where none
does, MPC seeded by the candidates (``prior_chunks``) plans the step instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from robotworld.model.priors import PLANNING, SWITCHES, Priors
from robotworld.planning.costs import CostWeights
from robotworld.policy import Scene


def missing_object(text: str, scene: Scene | None) -> str | None:
    """Why an instruction cannot be followed in the scene: it names a coloured object ("blue
    cylinder") that the episode does not hold. Checked where the scene's objects are known
    (simulation, ``Scene.env``); None when it can be followed or nothing is known."""
    env = getattr(scene, "env", None)
    episode = getattr(getattr(env, "unwrapped", None), "episode", None)
    if episode is None:
        return None
    from sims.scene import COLOURS

    words = text.lower().replace(",", " ").replace(".", " ").split()
    present = {f"{o.colour} {o.shape}" for o in episode.objects}
    for colour, shape in zip(words, words[1:]):
        if colour in COLOURS and shape in ("cube", "cylinder") and f"{colour} {shape}" not in present:
            return f"the instruction names a {colour} {shape}, which is not in the scene"
    return None


def hold(action_dim: int, grip: float = 1.0) -> np.ndarray:
    """(1, A) the arm holds still; the gripper keeps its last command (open at the start)."""
    a = np.zeros((1, action_dim), np.float32)
    a[0, -1] = grip
    return a


def _episode_seed(own: int, episode: int | None) -> int:
    return int(np.random.SeedSequence([own, 0 if episode is None else episode]).generate_state(1)[0])


@dataclass
class VLAPolicyConfig:
    """The VLA acting alone."""

    checkpoint: str = "default"
    """VLA checkpoint ('default': robotworld/checkpoints/vla.pt)."""
    execute: int = 4
    """Actions of each chunk executed before the next decision (receding: 1 re-plans every
    step; at most the chunk's length)."""
    noise: float = 1.0
    """Scale of the flow's starting noise (0: every sample the same mean path)."""
    seed: int = 0
    """The policy's own seed; an episode's draws restart from (this, the episode's seed)."""
    device: str = "auto"
    """auto, cpu or cuda."""


class VLAPolicy:
    """Acts from the cameras, proprioception and the instruction with a chunk from the VLA."""

    def __init__(self, cfg: VLAPolicyConfig | None = None) -> None:
        from robotworld.device import pick_device
        from robotworld.vla import load

        self.cfg = cfg = cfg or VLAPolicyConfig()
        self.device = pick_device(cfg.device)
        self.model = load(cfg.checkpoint, self.device)
        spec = self.model.spec
        if not 1 <= cfg.execute <= self.model.cfg.chunk:
            raise ValueError(f"execute = {cfg.execute}: expected 1 to the chunk length {self.model.cfg.chunk}")
        self.env_overrides = {"cameras": tuple(spec.cameras), "image_size": (spec.image_size, spec.image_size)}
        """The task config fields the VLA's observations need (``robotworld eval`` applies them)."""
        self.reads_state = False
        """The VLA acts from the cameras alone: no object or zone poses (the ROS bridge asks)."""
        self.generator = torch.Generator(device=self.device).manual_seed(_episode_seed(cfg.seed, None))
        self.scene: Scene | None = None
        self.grip = 1.0
        self.last_info: dict[str, Any] = {}

    def reset(self, seed: int | None = None, scene: Scene | None = None) -> None:
        self.generator.manual_seed(_episode_seed(self.cfg.seed, seed))
        self.scene, self.grip = scene, 1.0

    def refusal(self, obs: dict) -> str | None:
        """Why the policy will not act on this observation (the arm then holds), else None."""
        return missing_object(str(obs.get("instruction", "")), self.scene)

    def _inputs(self, obs: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        from robotworld.vla.language import embed

        spec, images = self.model.spec, {}
        for cam in spec.cameras:
            img = obs.get(f"image_{cam}")
            if img is None:
                raise ValueError(f"the VLA sees the {cam} camera: the observation has no image_{cam} (make the env "
                                 f"with cameras={tuple(spec.cameras)}, image_size=({spec.image_size}, {spec.image_size}))")
            img = np.asarray(img)
            if img.shape != (spec.image_size, spec.image_size, 3) or img.dtype != np.uint8:
                raise ValueError(f"image_{cam} is {img.dtype} {img.shape}: the VLA was trained on uint8 "
                                 f"({spec.image_size}, {spec.image_size}, 3) frames")
            images[cam] = torch.from_numpy(np.ascontiguousarray(img))[None].to(self.device)
        text = obs.get("instruction")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the VLA needs the task's instruction: obs['instruction'] is missing or empty")
        proprio = np.asarray(obs["proprio"], np.float32)
        if proprio.shape != (spec.proprio_dim,) or not np.isfinite(proprio).all():
            raise ValueError(f"proprio of shape {proprio.shape}: expected ({spec.proprio_dim},) finite values")
        lang = torch.from_numpy(embed(text).copy())[None].to(self.device)
        return images, torch.from_numpy(proprio)[None].to(self.device), lang

    @torch.no_grad()
    def features(self, obs: dict) -> torch.Tensor:
        """The decision feature z (1, hidden) of one observation."""
        return self.model.features(*self._inputs(obs))

    @torch.no_grad()
    def sample(self, obs: dict, k: int, z: torch.Tensor | None = None) -> np.ndarray:
        """(k, H, A) distinct candidate chunks for one observation."""
        if k < 1:
            raise ValueError(f"k = {k}: expected at least 1 chunk")
        z = self.features(obs) if z is None else z
        return self.model.sample(z, k, self.generator, self.cfg.noise)[0].cpu().numpy()

    @torch.no_grad()
    def estimate(self, obs: dict, z: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        """The object and zone positions estimated from the cameras, laid out as the state
        observation (``objects`` (7N,) with upright orientations, ``goal`` (3,)), N as in obs."""
        z = self.features(obs) if z is None else z
        pos, goal = self.model.estimate(z)
        n = max(1, np.asarray(obs.get("objects", np.zeros(7))).shape[-1] // 7)
        objects = np.zeros((n, 7), np.float32)
        objects[:, 3] = 1.0  # identity quaternion: the estimator gives positions only
        objects[:, :3] = pos[0, :n].cpu().numpy()
        return {"objects": objects.reshape(-1), "goal": goal[0].cpu().numpy().astype(np.float32)}

    def act(self, obs: dict) -> np.ndarray:
        """(execute, A): the first actions of one sampled chunk."""
        why = self.refusal(obs)
        if why:
            self.last_info = {"reason": f"holding: {why}"}
            return hold(self.model.spec.action_dim, self.grip)
        chunk = self.sample(obs, 1)[0]
        self.last_info = {"chunk": chunk}
        self.grip = float(np.sign(chunk[self.cfg.execute - 1, -1]) or 1.0)
        return chunk[:self.cfg.execute]


@dataclass
class ImagineConfig:
    """The VLA proposes, the world model imagines, the best safe future is executed."""

    vla: str = "default"
    """VLA checkpoint."""
    world_model: str = "default"
    """World-model checkpoint that scores the candidates."""
    candidates: int = 16
    """Chunks sampled from the VLA per decision (k)."""
    execute: int = 4
    """Actions of the chosen chunk executed before the next decision."""
    state: str = "privileged"
    """Where imagination's object and zone positions come from: privileged (the simulator's
    state) or estimated (the VLA's estimator, from the two cameras)."""
    estimator: str = ""
    """With state=estimated: the VLA checkpoint whose estimator head gives the positions
    ('' : the acting VLA's own), so that an estimator trained harder can serve a policy
    trained otherwise (the same cameras and frame size)."""
    max_collision: float = 0.5
    """A candidate whose imagined collision probability exceeds this at any executed step is
    rejected."""
    min_clearance: float = 0.0
    """A candidate whose imagined gripper comes closer than this (m) to an obstacle box at any
    executed step is rejected."""
    keep_grasp: float = 0.5
    """A candidate that imagines a held object (grasp probability at least this now) let go
    before the task is imagined done is rejected."""
    refine: str = "rejected"
    """When MPC (the mpc-fast preset) seeded by the candidates refines them: rejected (it plans
    the step when every candidate is rejected), always (its plan joins the candidates every
    decision and is scored, checked and chosen like them; it executes one step) or never (the
    lowest-cost candidate is executed even when all are rejected)."""
    choose: str = "cost"
    """Which passing candidate is executed: cost (the lowest imagined cost) or first (the VLA's
    own first draw that passes: imagination only vetoes)."""
    weights: CostWeights = field(default_factory=CostWeights)
    """How the imagined terms add up to the score (the planner's cost, lower is better)."""
    priors: Priors = PLANNING
    """The structural priors imagination applies (scoring and MPC's refinement alike); on the
    command line by switch, as for MPC: ``vla+imagine,lift=false``."""
    seed: int = 0
    """The policy's own seed."""
    device: str = "auto"
    """auto, cpu or cuda."""


class ImaginePolicy:
    """``vla+imagine``: sample, imagine, reject the unsafe, execute the best (see module doc)."""

    def __init__(self, cfg: ImagineConfig | None = None) -> None:
        from robotworld.model import load
        from robotworld.planning.costs import Scorer

        self.cfg = cfg = cfg or ImagineConfig()
        if cfg.state not in ("privileged", "estimated"):
            raise ValueError(f"state = {cfg.state!r}: expected privileged or estimated")
        if cfg.candidates < 1:
            raise ValueError(f"candidates = {cfg.candidates}: expected at least 1")
        if cfg.refine not in ("rejected", "always", "never"):
            raise ValueError(f"refine = {cfg.refine!r}: expected rejected, always or never")
        if cfg.choose not in ("cost", "first"):
            raise ValueError(f"choose = {cfg.choose!r}: expected cost or first")
        self.vla = VLAPolicy(VLAPolicyConfig(cfg.vla, cfg.execute, 1.0, cfg.seed, cfg.device))
        self.device = self.vla.device
        self.env_overrides = self.vla.env_overrides
        self.estimator = None
        if cfg.estimator and cfg.state == "estimated":
            self.estimator = VLAPolicy(VLAPolicyConfig(cfg.estimator, cfg.execute, 1.0, cfg.seed, cfg.device))
            a, b = self.vla.model.spec, self.estimator.model.spec
            if (tuple(a.cameras), a.image_size) != (tuple(b.cameras), b.image_size):
                raise ValueError(f"estimator {cfg.estimator} sees {tuple(b.cameras)} at {b.image_size} px; the "
                                 f"policy sees {tuple(a.cameras)} at {a.image_size} px: expected the same")
        self.reads_state = cfg.state == "privileged"
        """Whether imagination reads the object and zone poses from the state (the ROS bridge asks)."""
        self.world_model = load(cfg.world_model, self.device)
        self.scorer = Scorer(self.world_model, cfg.weights, cfg.priors)
        self.mpc = None
        if cfg.refine != "never":
            from policies.mpc import MPCPolicy, mpc_config

            switches = "".join(f",{k}=false" for k in SWITCHES if not getattr(cfg.priors, k))
            self.mpc = MPCPolicy(mpc_config(f"mpc:{cfg.world_model}{switches}", seed=cfg.seed, preset="fast",
                                            device=cfg.device))
            if self.mpc.cfg.priors != cfg.priors:
                raise ValueError(f"priors {cfg.priors}: MPC's refinement takes the switches of "
                                 f"{', '.join(SWITCHES)} only; refine=never imagines with any Priors")
        self.scene: Scene | None = None
        self.episode_stats = {"decisions": 0, "refined": 0}
        self.last_info: dict[str, Any] = {}

    def reset(self, seed: int | None = None, scene: Scene | None = None) -> None:
        if scene is None:
            raise ValueError("vla+imagine needs the episode's Scene (task, obstacles, action scale): "
                             "reset(seed, Scene.of(env))")
        self.scene = scene
        self.episode_stats = {"decisions": 0, "refined": 0}
        """This episode's decisions, and those in which MPC's refinement was executed."""
        self.vla.reset(seed, scene)
        if self.mpc is not None:
            self.mpc.reset(seed, scene)

    def warm_up(self, obs: dict) -> None:
        """One decision and one MPC refinement on obs, results dropped: the first call of each
        allocates and compiles (hundreds of ms), which a robot's first late answer must not pay."""
        self.act(obs)
        if self.mpc is not None:
            z = self.vla.features(obs)
            self.mpc.plan(self.imagined_state(obs, z), prior_chunks=self.vla.sample(obs, self.cfg.candidates, z))

    def imagined_state(self, obs: dict, z: torch.Tensor) -> dict:
        """The observation imagination starts from: obs itself, or with the estimated objects and goal."""
        if self.cfg.state == "privileged":
            return obs
        if self.estimator is not None:
            return {**obs, **self.estimator.estimate(obs)}
        return {**obs, **self.vla.estimate(obs, z)}

    def verdicts(self, scores, n: int) -> tuple[np.ndarray, list[str]]:
        """Which candidates pass (k,) bool, and why each failed, over the first n imagined steps."""
        im, c = scores.imagined, self.cfg
        coll = im.collision[:, :n].amax(1).cpu().numpy()
        clear = scores.terms["clearance"][:, :n].amin(1).cpu().numpy()
        grasp = im.grasp.cpu().numpy()
        held_now = grasp[:, 0].mean() >= c.keep_grasp
        done = im.success.amax(1).cpu().numpy() >= 0.5
        dropped = held_now & (grasp.min(1) < c.keep_grasp) & ~done
        why = []
        for k in range(len(coll)):
            r = [f"collision {coll[k]:.2f}"] if coll[k] > c.max_collision else []
            r += [f"clearance {clear[k] * 100:.1f} cm"] if clear[k] < c.min_clearance else []
            r += ["lets go of the object"] if dropped[k] else []
            why.append(", ".join(r))
        return np.array([not w for w in why]), why

    def act(self, obs: dict) -> np.ndarray:
        """(execute, A) the chosen chunk's first actions (or MPC's one step); ``last_info`` holds
        the candidates (k, H, A), their imagined outcomes, the choice and the reason."""
        scene = self.scene
        if scene is None:
            raise ValueError("call reset(seed, Scene.of(env)) before act")
        why = self.vla.refusal(obs)
        if why:
            self.last_info = {"reason": f"holding: {why}", "choice": None}
            return hold(self.vla.model.spec.action_dim, self.vla.grip)
        z = self.vla.features(obs)
        chunks = self.vla.sample(obs, self.cfg.candidates, z)
        state = self.imagined_state(obs, z)
        planned = None
        if self.cfg.refine == "always":  # MPC's refinement is one more candidate, judged the same way
            planned = self.mpc.plan(state, prior_chunks=chunks)[:chunks.shape[1]]
            if planned.shape[0] == chunks.shape[1]:
                chunks = np.concatenate((chunks, planned[None].astype(chunks.dtype)))
            else:
                planned = None
        scores = self.scorer.score(state, chunks, scene.task, scene.obstacles, scene.scale)
        n = self.cfg.execute
        ok, why = self.verdicts(scores, n)
        cost = scores.cost.cpu().numpy()
        im = scores.imagined
        info = {"candidates": chunks, "cost": cost, "passed": ok, "rejected_because": why,
                "imagined": {"success": im.success.cpu().numpy(), "grasp": im.grasp.cpu().numpy(),
                             "collision": im.collision.cpu().numpy(), "tool": im.tool_pos.cpu().numpy()}}
        if state is not obs:
            info["estimated"] = {k: state[k] for k in ("objects", "goal")}
        if ok.any():
            passing = np.flatnonzero(ok)
            best = int(passing[0] if self.cfg.choose == "first" else passing[np.argmin(cost[ok])])
            refined = planned is not None and best == len(chunks) - 1
            what = "MPC's refinement" if refined else f"candidate {best}"
            how = "the VLA's first draw" if self.cfg.choose == "first" else "the lowest cost"
            info.update(choice=best, reason=f"{what}: {how} of {int(ok.sum())} that pass")
            action = chunks[best][:1 if refined else n]
        elif self.mpc is not None and planned is None:
            refined, action = True, self.mpc.act(state, prior_chunks=chunks)
            info.update(choice=-1, reason="every candidate rejected: MPC seeded by them planned the step")
        else:
            best = int(np.argmin(cost))
            refined = planned is not None and best == len(chunks) - 1
            info.update(choice=best, reason=f"every candidate rejected: candidate {best} has the lowest cost")
            action = chunks[best][:n]
        info["refined"] = refined
        self.episode_stats["decisions"] += 1
        self.episode_stats["refined"] += int(info["refined"])
        self.last_info = info
        self.vla.grip = float(np.sign(action[-1, -1]) or 1.0)
        return action


_CONFIGS = {"vla": VLAPolicyConfig, "vla+imagine": ImagineConfig}


def vla_config(name: str, seed: int | None = None, device: str = "auto") -> VLAPolicyConfig | ImagineConfig:
    """The config a command-line name spells: 'vla[:CHECKPOINT][,FIELD=VALUE...]' or
    'vla+imagine[:CHECKPOINT][,FIELD=VALUE...]' (fields of VLAPolicyConfig or ImagineConfig;
    CostWeights fields go to vla+imagine's weights)."""
    head, *items = name.split(",")
    kind, _, path = head.partition(":")
    cls = _CONFIGS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("weights", "priors")}
    weight_fields = {f.name: f for f in dataclasses.fields(CostWeights)} if cls is ImagineConfig else {}
    if cls is ImagineConfig:  # prior switches, as mpc's: vla+imagine,lift=false
        weight_fields.update({k: dataclasses.field(default=True) for k in SWITCHES})
    values: dict[str, Any] = {"seed": seed or 0, "device": device}
    if path:
        values["checkpoint" if cls is VLAPolicyConfig else "vla"] = path
    weights: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        f = fields.get(key) or weight_fields.get(key)
        if not sep or f is None:
            raise ValueError(f"policy option '{item}': expected FIELD=VALUE with FIELD one of "
                             f"{', '.join([*fields, *weight_fields])}")
        kind_of = type(f.default) if f.default is not dataclasses.MISSING else str
        try:
            if kind_of is bool:
                if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                    raise ValueError
                v: Any = value.lower() in ("1", "true", "yes")
            else:
                v = kind_of(value)
        except ValueError:
            raise ValueError(f"policy option '{item}': {value!r} is not a {kind_of.__name__}") from None
        (weights if key in weight_fields and key not in fields else values)[key] = v
    switches = {k: weights.pop(k) for k in SWITCHES if k in weights}
    if switches:
        values["priors"] = dataclasses.replace(PLANNING, **switches)
    if weights:
        values["weights"] = CostWeights(**weights)
    return cls(**values)


def make(name: str, seed: int | None = None, device: str = "auto") -> VLAPolicy | ImaginePolicy:
    """The VLA policy a name spells (see ``vla_config``)."""
    cfg = vla_config(name, seed, device)
    return VLAPolicy(cfg) if isinstance(cfg, VLAPolicyConfig) else ImaginePolicy(cfg)
