"""The latent world model: encode an observation, imagine the outcomes of action sequences.

Design (TD-MPC2's decoder-free latent model, kept small enough to plan at 20 Hz on two CPU
cores):

Use: ``start = wm.encode(obs, task="lift")`` returns an immutable ``Start`` (latent, task
context, the observed tool, finger, objects and goal); ``wm.imagine(start, actions)`` with
actions (B, H, A) returns per-step ``Imagined`` outcomes. Nothing is kept on the model between
calls. The hand-written priors imagination applies are in ``robotworld.model.priors``.

- ``encode``: normalised state (proprio, object poses padded to ``max_objects``, goal)
  plus a task embedding and an instruction embedding (hashed words, EmbeddingBag), through an
  MLP into a latent normalised by SimNorm (softmax over groups of 8: bounded, no collapse).
- ``dynamics(z, a) -> z'``: an MLP on (z, a, task), SimNorm again. Trained by multi-step latent
  consistency: the latent rolled forward H steps is pulled towards the encoding of the
  observation actually reached (stop-gradient target), weighted by rho^t.
- Heads on z (one shared trunk): grasp and collision (logits), and decoders of the object, tool
  and goal positions, the pieces that are not decoder-free: they let what the model imagines
  be checked against physics in centimetres. Collision and grasp are read on the latent after
  the step, as ``info`` reports them after the step.
- A tool path: the tool's displacement since the start, from (z_0, z_t, summed actions), added
  to the observed tool position. Nearly every collision in the data is a fingertip touching
  the table, which happens within a millimetre or two of one tool height; a latent read
  absolutely does not hold that precision, a displacement from an observed start does. A
  small contact MLP turns the imagined tool position into a logit that is added to the
  collision head's.
- Reward and success from the imagined geometry: an MLP on the distances between the imagined
  tool, the imagined first object and the goal (plus the grasp probability and the task), not
  on the latent. A planner searches for the action sequences a model rates best, and a reward
  read off the latent rated states no episode visited far above what physics gives; distances
  between positions that are anchored at the observation extrapolate the way the task's reward
  does.
- Grasp is gated by the same geometry: the probability is the latent head's times a "the tool
  holds the first object" probability from the offset between the imagined tool and object.
  Read off the latent alone, closing the gripper anywhere in the air was imagined as a grasp
  (0.89 with the tool 8 cm above the cube), and the planner closed the gripper at once.
- Priors (``Priors``, each with a switch): objects move only once touched, rise only when
  held, and a closed gripper grasps only after opening, centred.
- A Q ensemble Q_k(z, a) (TD-learned on the data's own next actions, target network by EMA)
  for planning beyond the horizon.

Shapes: B batch, H horizon, A action size, L latent size, N object slots.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robotworld.model.priors import Priors, gripper_admits, lift_gate, touched
from sims.config import TASK_NAMES as TASKS
from sims.physics import FLAT_FINGER as FINGER
from sims.physics import FLAT_PROPRIO
from sims.physics import FLAT_TCP_POS as TOOL

# The task list and the proprio layout are the simulator's observation contract (sims.config,
# sims.physics), imported from there: TOOL and FINGER index ``proprio``.
PROPRIO_DIM = FLAT_PROPRIO.stop
INSTRUCTION_BUCKETS = 512


@dataclass
class ModelConfig:
    """Sizes of the world model; ``preset`` picks a named size, fields override it."""

    preset: str = "small"
    """tiny, small (default: plans at control rate on two CPU cores) or base."""
    latent_dim: int = 64
    """L, the latent size (a multiple of simnorm_group)."""
    hidden_dim: int = 128
    """Width of the encoder, dynamics and head MLPs."""
    simnorm_group: int = 8
    """SimNorm group size: the latent is a concatenation of L/group softmaxes."""
    task_dim: int = 16
    """Size of the task and instruction embeddings."""
    num_q: int = 2
    """Members of the Q ensemble."""
    ensemble: int = 0
    """Members of the grasp ensemble (0: none): small grasp heads, each trained on its own
    bootstrap of the windows, whose disagreement (``Imagined.doubt``) is large where training
    never showed the model such a state; the planner can charge it (the ``doubt`` cost term)."""
    priors: str = "none"
    """The structural priors the model is trained with (``robotworld.model.priors.parse``:
    none, all, or all less some, e.g. -touch): applied in the training loss and by ``imagine``
    unless a call names others, so both see the same rules."""

    def __post_init__(self) -> None:
        preset = PRESETS.get(self.preset)
        if preset is None:
            raise ValueError(f"model preset '{self.preset}': expected one of {', '.join(PRESETS)}")
        from robotworld.model.priors import parse

        parse(self.priors)  # refused here, not at the first imagine
        if self.ensemble < 0 or self.ensemble == 1:
            raise ValueError(f"ensemble = {self.ensemble}: expected 0 (none) or at least 2 members")
        if self.latent_dim % self.simnorm_group:
            raise ValueError(f"latent_dim = {self.latent_dim} is not a multiple of simnorm_group = "
                             f"{self.simnorm_group}")


PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"latent_dim": 32, "hidden_dim": 64},
    "small": {"latent_dim": 64, "hidden_dim": 128},
    "base": {"latent_dim": 128, "hidden_dim": 256},
}


def model_config(preset: str = "small", **overrides: Any) -> ModelConfig:
    """A ModelConfig from a preset name plus field overrides."""
    if preset not in PRESETS:
        raise ValueError(f"model preset '{preset}': expected one of {', '.join(PRESETS)}")
    return ModelConfig(preset=preset, **{**PRESETS[preset], **overrides})


@dataclass
class ModelSpec:
    """What the model's inputs look like: fixed by the data it was trained on."""

    proprio_dim: int = PROPRIO_DIM
    max_objects: int = 2
    action_dim: int = 5
    tasks: tuple[str, ...] = TASKS
    obs_mean: list[float] = field(default_factory=list)
    obs_std: list[float] = field(default_factory=list)
    reward_scale: float = 1.0

    @property
    def obs_dim(self) -> int:
        return self.proprio_dim + 7 * self.max_objects + 3


@dataclass(frozen=True)
class Start:
    """Everything a rollout from observed states needs: what ``WorldModel.encode`` returns.

    An immutable value: ``imagine`` reads it and nothing else, so starts from several
    observations can be kept, reused and imagined from in any order or thread. Every field's
    first dimension is B or 1 (1 is broadcast: one task for the whole batch, say).
    """

    latent: torch.Tensor
    """(B, L) the encoded observation."""
    task: torch.Tensor
    """(B or 1, T) the task embedding."""
    instruction: torch.Tensor
    """(B or 1, T) the instruction embedding (zeros without one)."""
    objects: torch.Tensor
    """(B, N, 3) observed object positions (empty slots are zeros)."""
    tool: torch.Tensor
    """(B, 3) observed tool position."""
    goal: torch.Tensor
    """(B, 3) the goal position."""
    finger: torch.Tensor | None = None
    """(B,) observed finger opening (m); None: no gripper gate (``priors.gripper_admits``)."""

    @property
    def batch(self) -> int:
        return self.latent.shape[0]

    def repeat(self, k: int) -> Start:
        """Each start k times in a row (start b at rows b * k .. (b + 1) * k - 1): the layout of
        k candidate sequences per observation. A shared task embedding stays shared."""
        def rep(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.repeat_interleave(k, 0)

        if k == 1 or self.batch == 1:
            return self
        return Start(rep(self.latent), self.task if self.task.shape[0] == 1 else rep(self.task),
                     self.instruction if self.instruction.shape[0] == 1 else rep(self.instruction),
                     rep(self.objects), rep(self.tool), rep(self.goal), rep(self.finger))


class Imagined(NamedTuple):
    """What ``imagine`` returns for B action sequences of H steps: batch-first (B, H, ...), or
    time-major (H, B, ...) with ``time_major=True``. Probabilities are after each step, as the
    environment's ``info`` reports them."""

    latents: torch.Tensor  # (B, H + 1, L): z_0 .. z_H
    reward: torch.Tensor  # (B, H)
    success: torch.Tensor  # (B, H)
    grasp: torch.Tensor  # (B, H)
    collision: torch.Tensor  # (B, H)
    object_pos: torch.Tensor  # (B, H, N, 3), N = 1 with objects="first"
    tool_pos: torch.Tensor  # (B, H, 3)
    doubt: torch.Tensor  # (B, H): the grasp ensemble's spread (zeros without one)

    def swapped(self) -> Imagined:
        """The other layout: batch-first from time-major, or the reverse."""
        return Imagined(*(t.transpose(0, 1) for t in self))

    @property
    def last(self) -> torch.Tensor:
        """The latent after the last step, (B, L) (either layout)."""
        return self.latents[:, -1] if self.latents.shape[1] == self.reward.shape[1] + 1 else self.latents[-1]

# dimension leaves the vectorised path (simnorm says what that costs)
_VECTOR_FLOATS = {"AVX512": 16, "AVX2": 8}


@functools.lru_cache(maxsize=None)
def _cpu_vector_floats() -> int:
    """Floats per vector of torch's CPU kernels on this machine (0 where not measured)."""
    return _VECTOR_FLOATS.get(torch.backends.cpu.get_cpu_capability(), 0)


def simnorm(x: torch.Tensor, group: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over consecutive groups of ``group`` features. x: (..., L); out: a contiguous
    tensor of x's shape to write into, where nothing is differentiated (the planner's rollout
    fills its latents' buffer in place of stacking them afterwards), returned.

    One softmax call where torch's kernel is fast for this group size: on a GPU, under
    torch.compile (which writes its own kernel) and on a CPU whose vectors hold at most
    ``group`` floats (AVX2 and groups of 8: 45-51 µs on a (1024, 64) latent, two cores). On a CPU
    with wider vectors (AVX-512, 16 floats) the softmax of a group of 8 leaves torch's
    vectorised path and took 415-467 µs, a quarter of an ``imagine`` call; there it is written
    out as max, exp, sum and divide (94-124 µs). The two forms agree to 3e-7; each machine
    always takes the same one, so seeded runs repeat on it.
    """
    grouped = (*x.shape[:-1], -1, group)
    if torch.compiler.is_compiling() or x.device.type != "cpu" or group >= _cpu_vector_floats():
        if out is None:
            return F.softmax(x.reshape(grouped), dim=-1).reshape(x.shape)
        torch.softmax(x.view(grouped), -1, out=out.view(grouped))
        return out
    return _simnorm_written_out(x, group, out)


def _simnorm_written_out(x: torch.Tensor, group: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``simnorm`` as max, exp, sum and divide (see there); in place into out when given.
    Differentiable without out (the max is a constant shift to a softmax, so it is detached)."""
    g = x.reshape(*x.shape[:-1], -1, group)
    shift = g.amax(-1, keepdim=True).detach()
    if out is None:
        e = (g - shift).exp()
        return (e / e.sum(-1, keepdim=True)).reshape(x.shape)
    og = out.view(g.shape)
    torch.sub(g, shift, out=og).exp_()
    og.div_(og.sum(-1, keepdim=True))
    return out


GEOMETRY_DIM = 13


def geometry(tool: torch.Tensor, obj: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """What the task rewards are made of, from positions (..., 3) in metres -> (..., 13): the
    offsets tool-goal, tool-object and object-goal in 10 cm units, their lengths, and the
    object's height above a resting 4 cm cube in 5 cm units."""
    d = torch.stack((tool - goal, tool - obj, obj - goal), -2)  # (..., 3, 3)
    return torch.cat((d.flatten(-2) / 0.1, d.norm(dim=-1) / 0.1, (obj[..., 2:] - 0.02) / 0.05), -1)


BLOCK_ROWS = 1024  # rows per block of by_blocks: a (1024, 128) float activation is 512 kB


def by_blocks(fn: Callable[..., torch.Tensor], rows: int, *xs: torch.Tensor) -> torch.Tensor:
    """fn, a row-wise function, applied to aligned blocks of ``rows`` rows of xs and the results
    concatenated: the same numbers as fn(*xs), with a block's hidden activations small enough to
    stay in cache (on two CPU cores a (17408, 128) hidden layer took about 1.5x as long whole).
    Whole under torch.compile, which fuses the elementwise work itself (and took minutes to
    compile a plan unrolled into blocks)."""
    if xs[0].shape[0] <= rows or torch.compiler.is_compiling():
        return fn(*xs)
    return torch.cat([fn(*(x[i:i + rows] for x in xs)) for i in range(0, xs[0].shape[0], rows)])


def rowwise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """fn, a row-wise map of the last dimension (an MLP), over x (..., d) in blocks of rows."""
    return by_blocks(fn, BLOCK_ROWS, x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


def mlp(inp: int, hidden: int, out: int, layers: int = 2) -> nn.Sequential:
    """Linear, LayerNorm, SiLU per hidden layer, then a linear output. (TD-MPC2 uses Mish; on two
    CPU cores an imagine call with SiLU took 36 ms against Mish's 48 ms.)"""
    mods: list[nn.Module] = []
    d = inp
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        d = hidden
    mods.append(nn.Linear(d, out))
    return nn.Sequential(*mods)


def instruction_tokens(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Hashed word ids and EmbeddingBag offsets for a list of instructions."""
    ids: list[int] = []
    offsets: list[int] = []
    for t in texts:
        offsets.append(len(ids))
        words = [w.strip(",.'") for w in t.lower().split()] or [""]
        ids.extend(zlib.crc32(w.encode()) % INSTRUCTION_BUCKETS for w in words)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


class WorldModel(nn.Module):
    """Latent dynamics with reward, outcome, object-position and Q heads. See the module doc."""

    def __init__(self, spec: ModelSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.spec, self.cfg = spec, cfg
        L, Hd, T, A = cfg.latent_dim, cfg.hidden_dim, cfg.task_dim, spec.action_dim
        self.task_emb = nn.Embedding(len(spec.tasks), T)
        self.instr_emb = nn.EmbeddingBag(INSTRUCTION_BUCKETS, T, mode="mean")
        self.encoder = mlp(spec.obs_dim + 2 * T, Hd, L)
        self.dynamics = mlp(L + A + T, Hd, L)
        # grasp, collision, object positions (3N), tool position (3), goal (3)
        self.heads = mlp(L + T, Hd, 2 + 3 * spec.max_objects + 6, layers=1)
        # reward and success logit from the imagined geometry, grasp probability and task
        self.outcome = mlp(GEOMETRY_DIM + 1 + T, Hd // 2, 2, layers=1)
        # can the tool hold the first object? a logit from their offset, gating the grasp head
        self.hold = mlp(3, 32, 1, layers=1)
        # the tool's displacement since the start latent (0.1 m units), from (z_0, z_t, sum of a)
        self.tool = mlp(2 * L + A, Hd // 2, 3, layers=1)
        # a collision logit from the imagined tool position (table contacts), added to the head's
        self.contact = mlp(3, 32, 1, layers=1)
        self.q = nn.ModuleList(mlp(L + A + T, Hd, 1) for _ in range(cfg.num_q))
        # has object n moved since the start latent? (logits from the pair (z_0, z_t))
        self.moved = mlp(2 * L, Hd // 2, spec.max_objects, layers=1)
        if cfg.ensemble:
            self.members = Members(L + T, 32, cfg.ensemble)
        mean = torch.tensor(spec.obs_mean or [0.0] * spec.obs_dim, dtype=torch.float32)
        std = torch.tensor(spec.obs_std or [1.0] * spec.obs_dim, dtype=torch.float32)
        self.register_buffer("obs_mean", mean)
        self.register_buffer("obs_std", std)
        # the head decodes object positions as 0.1 m units around the table-top workspace centre
        self.register_buffer("pos_offset", torch.tensor([0.5, 0.0, 0.03]))
        # the contact MLP sees the tool position in units of 10 cm across, 5 mm in height
        self.register_buffer("contact_offset", torch.tensor([0.5, 0.0, 0.01]))
        self.register_buffer("contact_scale", torch.tensor([0.1, 0.1, 0.005]))

    # ---- inputs ------------------------------------------------------------------------------
    def flat_obs(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate proprio, objects (zero-padded to max_objects) and goal. Each (..., d)."""
        for k in ("proprio", "objects", "goal"):
            if k not in obs:
                raise ValueError(f"observation has no '{k}' (keys: {sorted(obs)}); expected proprio, "
                                 "objects and goal")
        p, o, g = obs["proprio"], obs["objects"], obs["goal"]
        if p.shape[-1] != self.spec.proprio_dim or g.shape[-1] != 3 or o.shape[-1] % 7:
            raise ValueError(f"observation shapes proprio {tuple(p.shape)}, objects {tuple(o.shape)}, goal "
                             f"{tuple(g.shape)}; expected (..., {self.spec.proprio_dim}), (..., 7N), (..., 3)")
        pad = 7 * self.spec.max_objects - o.shape[-1]
        if pad < 0:
            raise ValueError(f"observation has {o.shape[-1] // 7} objects; this model takes at most "
                             f"{self.spec.max_objects}")
        if pad:
            o = F.pad(o, (0, pad))
        return torch.cat((p, o, g), -1)

    def task_context(self, task: torch.Tensor, instr: tuple[torch.Tensor, torch.Tensor] | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(task embedding (B, T), instruction embedding (B, T)). task: (B,) long ids."""
        t = self.task_emb(task)
        if instr is None:
            return t, torch.zeros_like(t)
        ids, offsets = instr
        return t, self.instr_emb(ids.to(t.device), offsets.to(t.device))

    # ---- the model ---------------------------------------------------------------------------
    def encode_flat(self, x: torch.Tensor, temb: torch.Tensor, iemb: torch.Tensor) -> torch.Tensor:
        """x: (..., obs_dim) raw; temb, iemb: (B, T) broadcast over the middle dims. -> (..., L)"""
        x = (x - self.obs_mean) / self.obs_std
        while temb.dim() < x.dim():
            temb, iemb = temb.unsqueeze(-2), iemb.unsqueeze(-2)
        ctx = torch.cat((temb, iemb), -1).expand(*x.shape[:-1], -1)
        return simnorm(self.encoder(torch.cat((x, ctx), -1)), self.cfg.simnorm_group)

    def next(self, z: torch.Tensor, a: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """One latent step. z: (B, L), a: (B, A), temb: (B, T) -> (B, L)"""
        return simnorm(self.dynamics(torch.cat((z, a, temb), -1)), self.cfg.simnorm_group)

    def read(self, z: torch.Tensor, temb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Head outputs for latents z: (..., L); temb broadcast to match."""
        while temb.dim() < z.dim():
            temb = temb.unsqueeze(-2)
        return self._decode(self.heads(torch.cat((z, temb.expand(*z.shape[:-1], -1)), -1)))

    def _decode(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """The heads' raw outputs (..., 2 + 3N + 6) as named values, positions in metres."""
        n = self.spec.max_objects
        pos = out[..., 2:2 + 3 * n].reshape(*out.shape[:-1], n, 3) * 0.1 + self.pos_offset
        tool = out[..., 2 + 3 * n:5 + 3 * n] * 0.1 + self.pos_offset
        goal = out[..., 5 + 3 * n:] * 0.1 + self.pos_offset
        return {"grasp": out[..., 0], "collision": out[..., 1], "object_pos": pos, "tool_pos": tool,
                "goal": goal}

    def tool_path(self, z0: torch.Tensor, z: torch.Tensor, summed: torch.Tensor,
                  start: torch.Tensor) -> torch.Tensor:
        """Tool positions after each step: start plus the decoded displacement.
        z0: (B, L), z: (B, H, L), summed: (B, H, A) actions summed up to each step,
        start: (B, 3) -> (B, H, 3) metres"""
        x = torch.cat((z0[:, None].expand_as(z), z, summed), -1)
        return start[:, None] + 0.1 * self.tool(x)

    def outcomes(self, tool: torch.Tensor, obj: torch.Tensor, goal: torch.Tensor, grasp: torch.Tensor,
                 temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reward, success logit), each (...), from positions tool, obj (the first object) and
        goal (..., 3) in metres, grasp probability (...) and task embedding (B, T)."""
        while temb.dim() < tool.dim():
            temb = temb.unsqueeze(-2)
        x = torch.cat((geometry(tool, obj, goal), grasp[..., None], temb.expand(*tool.shape[:-1], -1)), -1)
        out = rowwise(self.outcome, x)
        return out[..., 0] * self.spec.reward_scale, out[..., 1]

    def grasp_prob(self, logit: torch.Tensor, tool: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
        """Grasp probability (...): the head's logit (...) gated by the tool-object offset (..., 3)."""
        return torch.sigmoid(logit) * torch.sigmoid(self.hold_logit(tool, obj))

    def hold_logit(self, tool: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
        """Logit that the tool is where it can hold the object: offsets (..., 3) in 5 cm units."""
        return rowwise(self.hold, (tool - obj) / 0.05).squeeze(-1)

    def contact_logit(self, tool: torch.Tensor) -> torch.Tensor:
        """Collision logit from tool positions (..., 3) in metres -> (...)"""
        return rowwise(self.contact, (tool - self.contact_offset) / self.contact_scale).squeeze(-1)

    def moved_logits(self, z0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logits that each object has moved between z0 and z. z0: (B, L), z: (B, H, L) -> (B, H, N)"""
        return self.moved(torch.cat((z0[:, None].expand_as(z), z), -1))

    def q_values(self, z: torch.Tensor, a: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """(num_q, ...) Q estimates. z: (..., L), a: (..., A)."""
        while temb.dim() < z.dim():
            temb = temb.unsqueeze(-2)
        x = torch.cat((z, a, temb.expand(*z.shape[:-1], -1)), -1)
        return torch.stack([q(x).squeeze(-1) for q in self.q])

    # ---- the public API (DESIGN.md) ------------------------------------------------------------
    def encode(self, obs: dict[str, Any], task: str | list[str] | torch.Tensor | None = None) -> Start:
        """The start of rollouts from observations. obs: proprio (B, 22) / objects (B, 7n) /
        goal (B, 3), or one unbatched observation; ``instruction`` (text, or B texts) is used
        when present. task: one name for the batch (its embedding is shared), B names, or (B,)
        ids; by default the model's first task. Keeps nothing on the model."""
        device = self.obs_mean.device
        tensors = {k: torch.as_tensor(np.asarray(obs[k]) if not isinstance(obs[k], torch.Tensor) else obs[k],
                                      dtype=torch.float32, device=device)
                   for k in ("proprio", "objects", "goal") if k in obs}
        if "proprio" in tensors and tensors["proprio"].dim() == 1:
            tensors = {k: v.unsqueeze(0) for k, v in tensors.items()}
        x = self.flat_obs(tensors)
        temb, iemb = self._make_context(x.shape[0], task, obs.get("instruction"), device)
        return self.start_of(x, temb, iemb)

    def start_of(self, x: torch.Tensor, temb: torch.Tensor, iemb: torch.Tensor, gripper: bool = True,
                 latent: torch.Tensor | None = None) -> Start:
        """The Start of raw flat observations x (B, obs_dim) (``flat_obs``) with their task and
        instruction embeddings (B or 1, T); gripper=False leaves the finger out (no gate);
        latent: x's encoding when already computed (training encodes whole windows)."""
        B, n, P = x.shape[0], self.spec.max_objects, self.spec.proprio_dim
        objects = x[:, P:P + 7 * n].reshape(B, n, 7)[..., :3]
        z = self.encode_flat(x, temb, iemb) if latent is None else latent
        return Start(z, temb, iemb, objects, x[:, TOOL], x[:, P + 7 * n:P + 7 * n + 3], x[:, FINGER] if gripper else None)

    def _make_context(self, B: int, task, instruction, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(task embedding, instruction embedding): (1, T) each where one is shared by the batch."""
        if task is None:
            task = self.spec.tasks[0]
        names = [task] if isinstance(task, str) else task
        if not isinstance(names, torch.Tensor):
            unknown = sorted(set(names) - set(self.spec.tasks))
            if unknown:
                raise ValueError(f"task {unknown[0]!r} is not one this model knows ({', '.join(self.spec.tasks)})")
            names = torch.tensor([self.spec.tasks.index(t) for t in names], device=device)
        if names.shape[0] not in (1, B):
            raise ValueError(f"{names.shape[0]} tasks for {B} observations: expected one, or one per observation")
        instr = None
        if instruction is not None:
            texts = [instruction] if isinstance(instruction, str) else list(instruction)
            if len(texts) not in (1, B):
                raise ValueError(f"{len(texts)} instructions for {B} observations: expected one, or one per observation")
            instr = instruction_tokens(texts)
        temb, iemb = self.task_context(names.to(device), instr)
        if iemb.shape[0] != temb.shape[0]:  # one task, B instructions (or the reverse)
            temb = temb.expand(B, -1) if temb.shape[0] == 1 else temb
            iemb = iemb.expand(B, -1) if iemb.shape[0] == 1 else iemb
        return temb, iemb

    @property
    def priors(self) -> Priors:
        """The structural priors the model was trained with (``ModelConfig.priors``)."""
        from robotworld.model.priors import parse

        return parse(self.cfg.priors)

    def imagine(self, start: Start, actions: torch.Tensor, *, objects: str = "all", time_major: bool = False,
                priors: Priors | None = None) -> Imagined:
        """Roll B action sequences forward from ``start``: the one forward path of the model
        (training, planning and the benchmarks all come through here).

        Object positions are the observed start plus the decoded displacement (a bias of the
        decoder cancels), weighted by the probability that the object moved at all and, with
        ``priors.touch``, by ``touched``. Grasp is the head's probability gated by the learned
        hold gate and, with an observed finger opening, by ``gripper_admits``; the first object
        rises off or moves across the table only as far as it is grasped (``priors.lift``).
        Reward and success come from the imagined geometry (``outcomes``).

        Computed time-major (``rollout``), with every MLP's first layer split by input, so that
        what is constant along a sequence (task, start latent) is one product, not H.

        Args:
            start: from ``encode`` (B or 1 starts; 1 is broadcast to the B sequences).
            actions: (B, H, A) in [-1, 1]; (H, B, A) with ``time_major``.
            objects: "all" (N objects) or "first" (the planner's lean path: the costs read no other).
            time_major: actions and every output laid out (H, B, ...).
            priors: which structural priors to apply (``robotworld.model.priors``); by default
                the model's own, those it was trained with (``ModelConfig.priors``).
        Returns:
            Imagined, batch-first or time-major as the actions.
        """
        if actions.dim() != 3 or actions.shape[-1] != self.spec.action_dim:
            want = "(H, B, {})" if time_major else "(B, H, {})"
            raise ValueError(f"actions have shape {tuple(actions.shape)}; expected {want.format(self.spec.action_dim)}")
        if objects not in ("all", "first"):
            raise ValueError(f"objects = {objects!r}: expected 'all' or 'first'")
        if not isinstance(start, Start):
            raise TypeError(f"imagine() takes the Start that encode() returns, not {type(start).__name__}")
        act = actions if time_major else actions.transpose(0, 1)  # (H, B, A)
        H, B, A = act.shape
        if start.batch not in (1, B):
            raise ValueError(f"{start.batch} starts for {B} action sequences: expected one, or one per sequence")
        out = self._imagine(start, act, 1 if objects == "first" else self.spec.max_objects,
                            self.priors if priors is None else priors)
        return out if time_major else out.swapped()

    def _imagine(self, s: Start, act: torch.Tensor, n: int, p: Priors, train: bool = False
                 ) -> Imagined | tuple[Imagined, dict[str, torch.Tensor]]:
        """``imagine``'s body, time-major: act (H, B, A), the first n objects. -> Imagined (H, B, ...)

        train: also return what the training loss reads of the same path (``TRAIN_OUTPUTS``):
        every head's raw output, the moved gate's, collision and success logits and the log grasp
        probability; the geometry that feeds the contact, hold and outcome MLPs is detached there,
        so that their losses train those MLPs, not the positions (the position losses do)."""
        L, A = self.cfg.latent_dim, self.spec.action_dim
        H, B, _ = act.shape
        z0, temb = s.latent, s.task
        inplace = not torch.is_grad_enabled()  # nothing differentiated: in-place work and buffers
        if inplace:  # the rollout writes into the buffer: no stack and no concatenation
            zs = torch.empty(H + 1, B, L, dtype=z0.dtype, device=z0.device)
            zs[0] = z0
            self.rollout(z0, act, temb, out=zs[1:])
        else:
            zs = torch.cat((z0.expand(B, L)[None], self.rollout(z0, act, temb)))
        rows, block = zs[1:].reshape(H * B, L), self._block_rows(B)
        # grasp, collision, the first n objects (training reads the tool and goal decoders too)
        cols = self.heads[-1].out_features if train else 2 + 3 * n
        hl1, hln, _, hout = self.heads
        task_head = torch.addmm(hl1.bias, temb, hl1.weight[:, L:].T)

        def read(r: torch.Tensor) -> torch.Tensor:
            h = F.silu(hln(self._with_share(r, hl1.weight[:, :L], task_head)), inplace=inplace)
            return torch.addmm(hout.bias[:cols], h, hout.weight[:cols].T)

        out = by_blocks(read, block, rows).view(H, B, cols)
        first = self.read(z0.expand(temb.shape[0], -1) if z0.shape[0] == 1 else z0, temb)["object_pos"][:, :n]
        obj_start = s.objects[:, :n]  # (1 or B, n, 3)
        # the tool path and the moved gate, their first layers split as the dynamics' is: the
        # start latent's share is a constant, the latents' (and summed actions') a product each
        tl1, tln, _, tout = self.tool
        ml1, mln, _, mout = self.moved
        tool_share, moved_share = self._start_share(tl1, z0, L), self._start_share(ml1, z0, L)

        def path(r: torch.Tensor, summed: torch.Tensor) -> torch.Tensor:
            th = self._with_share(r, tl1.weight[:, L:2 * L], tool_share).addmm_(summed, tl1.weight[:, 2 * L:].T)
            return tout(F.silu(tln(th), inplace=inplace))

        def moved_logit(r: torch.Tensor) -> torch.Tensor:
            mh = F.silu(mln(self._with_share(r, ml1.weight[:, L:], moved_share)), inplace=inplace)
            return torch.addmm(mout.bias[:n], mh, mout.weight[:n].T)

        summed = act.cumsum(0).reshape(H * B, A)
        tool = by_blocks(path, block, rows, summed).view(H, B, 3).mul(0.1).add_(s.tool)
        moved_logits = by_blocks(moved_logit, block, rows).view(H, B, n)
        moved = torch.sigmoid(moved_logits)
        if p.touch:
            moved = moved * touched(tool, obj_start, p)
        decoded = out[..., 2:2 + 3 * n].reshape(H, B, n, 3) * 0.1 + self.pos_offset
        pos = obj_start + moved[..., None] * (decoded - first)  # (H, B, n, 3)
        obj0 = pos[:, :, 0]
        geo = (lambda t: t.detach()) if train else (lambda t: t)  # noqa: E731
        gate = s.finger is not None and p.empty_gripper
        admits = gripper_admits(s.finger, act[..., -1], geo(tool), geo(obj0), s.tool - obj_start[:, 0], p) if gate else None
        hold = self.hold_logit(geo(tool), geo(obj0))
        if train:  # in log space, as the loss reads it
            log_grasp = F.logsigmoid(out[..., 0]) + F.logsigmoid(hold)
            if gate:
                log_grasp = log_grasp + admits.clamp_min(1e-4).log()  # a bounded loss where the rule and a label disagree
            grasp = log_grasp.exp()
        else:
            grasp = torch.sigmoid(out[..., 0]) * torch.sigmoid(hold)
            if gate:
                grasp = grasp * admits
        doubt, member_logits = grasp.new_zeros(()).expand_as(grasp), None  # a view: no memory
        if self.cfg.ensemble:  # each member's grasp probability under the same gates
            ml1 = self.members.first
            share = torch.addmm(ml1.bias, temb, ml1.weight[:, L:].T)
            member_logits = by_blocks(lambda r: self.members.out(self._with_share(r, ml1.weight[:, :L], share)),
                                      block, rows).view(H, B, -1)
            gates = torch.sigmoid(hold) * (admits if gate else 1.0)
            doubt = (torch.sigmoid(member_logits) * gates.detach()[..., None]).std(-1)
        if p.lift:
            obj0 = lift_gate(obj0, obj_start[:, 0], grasp, p)
            pos = torch.cat((obj0[:, :, None], pos[:, :, 1:]), 2)
        collision_logit = out[..., 1] + self.contact_logit(geo(tool))
        reward, success = self.outcomes(geo(tool), geo(obj0), s.goal, geo(grasp), temb[None])
        imagined = Imagined(zs, reward, torch.sigmoid(success), grasp, torch.sigmoid(collision_logit), pos, tool,
                            doubt)
        if not train:
            return imagined
        return imagined, {"heads": out, "moved_logit": moved_logits, "collision_logit": collision_logit,
                          "success_logit": success, "log_grasp": log_grasp, "member_logits": member_logits}

    def rollout(self, z: torch.Tensor, actions: torch.Tensor, temb: torch.Tensor,
                out: torch.Tensor | None = None) -> torch.Tensor:
        """Latents after each step, ``next`` applied H times, computed as the plan needs it.

        The first layer of the dynamics is split by input: the task's share is a constant, and
        each step adds the actions' and the latent's shares onto it, two addmm and no
        concatenation. (One product of all H steps' actions with their 5 columns of the weight
        took longer on two CPU cores than the 16 small ones.) Same numbers as ``next`` (tests
        check it).

        Args:
            z: (1 or B, L) start latent(s).
            actions: (H, B, A) time-major.
            temb: (1 or B, T) task embedding.
            out: a contiguous (H, B, L) buffer to write the latents into, where nothing is
                differentiated (a stack of the H latents took about 1 ms of a 55 ms imagine
                call at B = 1,024, H = 16, two CPU cores, and a concatenation after it as long).
        Returns:
            (H, B, L) latents z_1 .. z_H (out, when given).
        """
        L, A = self.cfg.latent_dim, self.spec.action_dim
        H, B, _ = actions.shape
        lin1, ln1, _, lin2, ln2, _, lin3 = self.dynamics  # Linear, LayerNorm, SiLU, ..., Linear
        w = lin1.weight
        task_drive = torch.addmm(lin1.bias, temb, w[:, L + A:].T)  # (1 or B, Hd)
        w_z, w_a = w[:, :L].T, w[:, L:L + A].T
        z = z.expand(B, -1)
        inplace = not torch.is_grad_enabled()  # in-place activations only where nothing is differentiated
        zs = []
        norm1, norm2 = (ln1.normalized_shape, ln1.weight, ln1.bias, ln1.eps), \
            (ln2.normalized_shape, ln2.weight, ln2.bias, ln2.eps)
        for t in range(H):  # functional calls: this loop is the plan
            # the step's actions, then its latent, added onto the task's share (addmm's output is
            # not saved for backward, so adding in place is safe under autograd)
            h = F.silu(F.layer_norm(torch.addmm(task_drive, actions[t], w_a).addmm_(z, w_z), *norm1), inplace=inplace)
            h = F.silu(F.layer_norm(F.linear(h, lin2.weight, lin2.bias), *norm2), inplace=inplace)
            x = F.linear(h, lin3.weight, lin3.bias)
            z = simnorm(x, self.cfg.simnorm_group, None if out is None else out[t])
            zs.append(z)
        return torch.stack(zs) if out is None else out

    @staticmethod
    def _block_rows(B: int) -> int:
        """Rows per block of ``by_blocks`` over time-major rows of B sequences: whole steps, about
        BLOCK_ROWS of them (a share of shape (B, out) then lines up with every block)."""
        return B * max(1, BLOCK_ROWS // B)

    @staticmethod
    def _start_share(first: nn.Linear, z0: torch.Tensor, L: int) -> torch.Tensor:
        """bias + z_0's share of a first layer that reads (z_0, z_t, ...): (1 or S, out)."""
        return torch.addmm(first.bias, z0, first.weight[:, :L].T)

    @staticmethod
    def _with_share(rows: torch.Tensor, weight: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
        """rows (R * B, k) times weight (out, k) transposed, plus share (1 or B, out) broadcast over
        the R blocks of B rows (row r * B + b gets share[b]), without repeating share R times.
        -> (R * B, out)"""
        if share.shape[0] == 1:
            return torch.addmm(share, rows, weight.T)
        out = rows @ weight.T
        return out.view(-1, share.shape[0], out.shape[-1]).add_(share).view_as(out)


class Members(nn.Module):
    """k small MLPs of one hidden layer evaluated as one: a shared first product (each member
    its own columns), SiLU, and each member's own output weights. (R, inp) -> (R, k) logits."""

    def __init__(self, inp: int, hidden: int, k: int) -> None:
        super().__init__()
        self.k, self.hidden = k, hidden
        self.first = nn.Linear(inp, k * hidden)
        self.out_weight = nn.Parameter(torch.randn(k, hidden) / hidden ** 0.5)
        self.out_bias = nn.Parameter(torch.zeros(k))

    def out(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (R, k) from the first layer's pre-activations (R, k * hidden)."""
        h = F.silu(h).view(-1, self.k, self.hidden)
        return torch.einsum("rkh,kh->rk", h, self.out_weight) + self.out_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.first(x))


def config_dict(spec: ModelSpec, cfg: ModelConfig) -> dict[str, Any]:
    return {"spec": {**asdict(spec), "tasks": list(spec.tasks)}, "model": asdict(cfg)}
