"""The latent world model: encode an observation, imagine the outcomes of action sequences.

Design (TD-MPC2's decoder-free latent model, kept small enough to plan at 20 Hz on two CPU
cores):

- ``encode(obs) -> z``: normalised state (proprio, object poses padded to ``max_objects``, goal)
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
- A Q ensemble Q_k(z, a) (TD-learned on the data's own next actions, target network by EMA)
  for planning beyond the horizon.

Shapes: B batch, H horizon, A action size, L latent size, N object slots.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("reach", "push", "lift", "pick_place", "pick_place_clutter")
INSTRUCTION_BUCKETS = 512
TOOL = slice(15, 18)
"""Where the tool position sits in ``proprio`` (q 7, dq 7, finger 1, tool xyz 3, tool quat 4)."""
TOOL_QUAT = slice(18, 22)
"""Where the tool orientation quaternion (w, x, y, z) sits in ``proprio``."""
FINGER = 14
"""Where the finger opening (m, both fingers) sits in ``proprio``."""
TOUCH_RADIUS, TOUCH_SOFTNESS = 0.08, 0.005
"""An object moves only once the tool has come within about TOUCH_RADIUS metres of where it
started. Measured on 320 episodes (noisy-expert and random, 40 each on push, lift, pick_place
and pick_place_clutter): every object that moved more than 5 mm had had the tool within 5.4 cm
of its start. Imagination gates the decoded displacement by this, so that a plan cannot
imagine the object rising while the gripper closes 20 cm above it."""
FINGER_MAX_OPENING = 0.08
"""Full opening of the gripper (m), 2 x ``sims.robot.FINGER_MAX`` (the model does not import
the simulator; a test checks they agree); grip action g commands (g + 1) / 2 of it."""
HOLD_MIN_OPENING, HELD_MAX_OPENING, ADMIT_OPENING, OPENING_SOFTNESS = 0.018, 0.058, 0.05, 0.002
"""A grasp needs an object between the pads. A gripper that starts closed to below
HOLD_MIN_OPENING (half the narrowest object; the environment counts a grasp only at an opening
of at least half the object's width) holds nothing, and can grasp only once a step of the plan
commands at least ADMIT_OPENING (the widest object, 4.8 cm, with a margin). Without this, a
plan that keeps a closed, empty gripper next to the object was imagined as holding and lifting
it: the planner found that error and stayed there (lift, seed 1). An opening between
HOLD_MIN_OPENING and HELD_MAX_OPENING may be a grasp already made: the learned head decides."""
ADMIT_GRIP = 2 * ADMIT_OPENING / FINGER_MAX_OPENING - 1
"""The gripper action (0.25) that commands ADMIT_OPENING: imagination reads a step commanded
below it as closing the gripper, and MPC executes it as fully closed (``PlannerConfig.switch_snap``)."""
CENTRED_XY, CENTRED_Z = 0.015, 0.015
"""A new grasp also needs the tool centred on the object at the step where the plan commands the
gripper closed (below ADMIT_OPENING) after an open one: within CENTRED_XY across and CENTRED_Z
in height, where that step starts and where it ends (the fingers shut within one control step,
from 8 cm to under 1 cm). The expert's first grasped step is within 0.2 cm. Planner grasps
that failed closed 2 cm off across or 2-3 cm above the centre, or passed over the centre and
closed 3 cm beyond it. The learned hold gate, which also covers objects held off-centre once
lifted, still gave those 0.9. Centred only at the end of the closing step was also too little:
on lift seed 6 the plan closed with the tool 1.5 cm across and 1.9 cm above the cylinder,
imagined arriving centred, and rated the grasp 0.98 (0.33 with the start of the step
counted); in physics the pads pushed the cylinder away."""
LIFT_FREE = 0.01
"""How far (m) an object may rise above its start without being grasped (tipping, bumps):
imagination scales any rise beyond this by the grasp probability."""
CARRY_FREE = 0.005
"""How far (m) an object may move across the table from its start without being grasped (a
nudge): imagination scales any sideways displacement beyond this by the grasp probability.
Without it the model moved a cube with a tool that had come near it, held or not: it imagined
a cube pushed 13 cm onto the goal by fingers passing above it, or dragged 19 cm beside a
gripper closed on nothing, and MPC on pick_place planned for those (0 of 20; BENCHMARKS.md).
It was 2 cm, half the radius of a place zone, and the planner spent it: objects let go 4-7 cm
from the zone's centre were imagined drifting, untouched, the last centimetre into it, and the
plans stood still at an imagined success of 0.9 (pick_place_clutter at the fast preset: 94 of
100 at 5 mm, 90 at 1 cm, 76 at 2 cm, same seeds)."""


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

    def __post_init__(self) -> None:
        preset = PRESETS.get(self.preset)
        if preset is None:
            raise ValueError(f"model preset '{self.preset}': expected one of {', '.join(PRESETS)}")
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

    proprio_dim: int = 22
    max_objects: int = 2
    action_dim: int = 5
    tasks: tuple[str, ...] = TASKS
    obs_mean: list[float] = field(default_factory=list)
    obs_std: list[float] = field(default_factory=list)
    reward_scale: float = 1.0

    @property
    def obs_dim(self) -> int:
        return self.proprio_dim + 7 * self.max_objects + 3


class Imagined(NamedTuple):
    """What ``imagine`` returns for B action sequences of H steps."""

    latents: torch.Tensor  # (B, H + 1, L): z_0 .. z_H
    reward: torch.Tensor  # (B, H)
    success: torch.Tensor  # (B, H) probability after each step
    grasp: torch.Tensor  # (B, H)
    collision: torch.Tensor  # (B, H)
    object_pos: torch.Tensor  # (B, H, N, 3) decoded object positions after each step
    tool_pos: torch.Tensor  # (B, H, 3) imagined tool position after each step


class Outcomes(NamedTuple):
    """What ``imagine_outcomes`` returns for S action sequences of H steps (time-major)."""

    reward: torch.Tensor  # (H, S)
    success: torch.Tensor  # (H, S) probability after each step
    collision: torch.Tensor  # (H, S) probability after each step
    last: torch.Tensor  # (S, L) the latent after the last step
    grasp: torch.Tensor  # (H, S) probability after each step
    tool_pos: torch.Tensor  # (H, S, 3) imagined tool position
    object_pos: torch.Tensor  # (H, S, 3) imagined position of the first object
    goal: torch.Tensor  # (1 or S, 3) the goal


# Floats per vector of the CPU kernels torch dispatches to: its softmax along a shorter last
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


def touched(tool: torch.Tensor, start: torch.Tensor, dim: int) -> torch.Tensor:
    """Soft 0/1 that the tool has come within TOUCH_RADIUS of each object's start position by
    each step. tool: (..., H, ..., 3) along time axis ``dim``; start: the objects' start
    positions, (B, N, 3) against tool (B, H, 3) (dim 1), or (S or 1, 3) against (H, S, 3)
    (dim 0). Returns (B, H, N) or (H, S)."""
    if dim == 1:
        d = (tool[:, :, None] - start[:, None]).norm(dim=-1)  # (B, H, N)
    else:
        d = (tool - start).norm(dim=-1)  # (H, S)
    return torch.sigmoid((TOUCH_RADIUS - d) / TOUCH_SOFTNESS).cummax(dim).values


def commanded_opening(grip: torch.Tensor) -> torch.Tensor:
    """The gripper opening (m, both fingers) that gripper actions ``grip`` in [-1, 1] command:
    (grip + 1) / 2 of ``FINGER_MAX_OPENING``."""
    return (grip + 1) * (FINGER_MAX_OPENING / 2)


def gripper_admits(finger: torch.Tensor, grip: torch.Tensor, tool: torch.Tensor, obj: torch.Tensor,
                   dim: int, start: torch.Tensor) -> torch.Tensor:
    """Soft 0/1, per step, that the gripper could hold the object: it started closed on
    something (observed opening ``finger`` between HOLD_MIN_OPENING and HELD_MAX_OPENING),
    or, at some step so far, it was commanded closed (below ADMIT_OPENING) while open just
    before (the step before commanded at least ADMIT_OPENING, or, at the first step, the
    observed opening was), with the tool centred on the object (within CENTRED_XY across and
    CENTRED_Z in height) both where that step starts and where it ends. The fingers close
    within one control step: a gripper closed 3 cm off that then slid to the centre holds
    nothing. finger: (B,) or (S or 1,) metres; grip: gripper actions (B, H) along ``dim`` 1 or
    (H, S) along ``dim`` 0; tool, obj: imagined positions, grip's shape plus (3,); start: the
    observed tool-minus-object offset, (B, 3) or (S or 1, 3).
    Returns grip's shape."""
    soft = OPENING_SOFTNESS
    f = finger.reshape(-1)
    f = f[:, None] if dim == 1 else f[None]
    held = torch.sigmoid((f - HOLD_MIN_OPENING) / soft) * torch.sigmoid((HELD_MAX_OPENING - f) / soft)
    opening = commanded_opening(grip)
    opened = torch.sigmoid((opening - ADMIT_OPENING) / soft)
    closing = torch.sigmoid((ADMIT_OPENING - opening) / soft)

    def centred(d: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((CENTRED_XY - d[..., :2].norm(dim=-1)) / soft) * torch.sigmoid((CENTRED_Z - d[..., 2].abs()) / soft)

    def previous(x: torch.Tensor, at_start: torch.Tensor) -> torch.Tensor:
        """x one step later along dim: each step sees the step before, the first sees at_start."""
        return torch.cat((at_start.expand_as(x.narrow(dim, 0, 1)), x.narrow(dim, 0, x.shape[dim] - 1)), dim)

    here = centred(tool - obj)
    before = previous(here, centred(start.unsqueeze(dim)))  # start: (B, 1, 3) or (1, S, 3)
    was_open = previous(opened, torch.sigmoid((f - ADMIT_OPENING) / soft))
    return torch.maximum(held, (was_open * closing * before * here).cummax(dim).values)


def lift_gate(obj: torch.Tensor, start: torch.Tensor, grasp: torch.Tensor) -> torch.Tensor:
    """Object positions obj (..., 3) with any rise above start (..., 3) beyond LIFT_FREE, and
    any move across beyond CARRY_FREE, scaled by the grasp probability (...): nothing rises off
    the table, or travels across it, unless held."""
    rise = obj[..., 2] - start[..., 2]
    z = start[..., 2] + rise.clamp(max=LIFT_FREE) + (rise - LIFT_FREE).clamp(min=0) * grasp
    d = obj[..., :2] - start[..., :2]
    dist = d.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    allowed = dist.clamp(max=CARRY_FREE) + (dist - CARRY_FREE).clamp(min=0) * grasp[..., None]
    return torch.cat((start[..., :2] + d * (allowed / dist), z[..., None]), -1)


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
        mean = torch.tensor(spec.obs_mean or [0.0] * spec.obs_dim, dtype=torch.float32)
        std = torch.tensor(spec.obs_std or [1.0] * spec.obs_dim, dtype=torch.float32)
        self.register_buffer("obs_mean", mean)
        self.register_buffer("obs_std", std)
        # the head decodes object positions as 0.1 m units around the table-top workspace centre
        self.register_buffer("pos_offset", torch.tensor([0.5, 0.0, 0.03]))
        # the contact MLP sees the tool position in units of 10 cm across, 5 mm in height
        self.register_buffer("contact_offset", torch.tensor([0.5, 0.0, 0.01]))
        self.register_buffer("contact_scale", torch.tensor([0.1, 0.1, 0.005]))
        # set by encode(): the task context and observed object positions that imagine() and
        # the planner's cost use by default for the latents it returned
        self.last_context: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_anchor: torch.Tensor | None = None
        self.last_tool: torch.Tensor | None = None
        self.last_finger: torch.Tensor | None = None
        self.last_goal: torch.Tensor | None = None

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

    def compose(self, z0: torch.Tensor, z: torch.Tensor, heads: dict[str, torch.Tensor],
                first: dict[str, torch.Tensor], summed: torch.Tensor, anchor: torch.Tensor,
                tool: torch.Tensor, goal: torch.Tensor, temb: torch.Tensor,
                grip: torch.Tensor | None = None, finger: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, ...]:
        """What ``imagine`` reports after each step, from the start latent z0 (B, L), the latents
        z (B, H, L) with their head outputs ``heads``, the head outputs at z0 (``first``), the
        summed actions (B, H, A), and the observed object positions anchor (B, N, 3), tool
        position (B, 3) and goal (B, 3).

        Object positions are the observed start plus the decoded displacement, so that a bias of
        the decoder cancels, weighted by the probability that the object moved at all, so that
        resting objects stay exactly where they were observed, and by ``touched``: no object
        moves before the imagined tool has come near it. Given the observed opening ``finger``
        (B,), grasp is gated by ``gripper_admits`` (with the gripper actions ``grip`` (B, H)) and
        the first object rises off, or moves across, the table only as far as it is grasped
        (``lift_gate``).

        Returns object positions (B, H, N, 3), tool positions (B, H, 3), and grasp and collision
        probabilities, reward and success logits, each (B, H).
        """
        start_tool = tool
        tool = self.tool_path(z0, z, summed, tool)
        moved = (torch.sigmoid(self.moved_logits(z0, z)) * touched(tool, anchor, 1))[..., None]
        pos = anchor[:, None] + moved * (heads["object_pos"] - first["object_pos"][:, None])
        grasp = self.grasp_prob(heads["grasp"], tool, pos[:, :, 0])
        obj0 = pos[:, :, 0]
        if finger is not None:  # the gripper gates, where the opening was observed
            grasp = grasp * gripper_admits(finger, grip, tool, obj0, 1, start_tool - anchor[:, 0])
            obj0 = lift_gate(obj0, anchor[:, None, 0], grasp)
            pos = torch.cat((obj0[:, :, None], pos[:, :, 1:]), 2)
        collision = torch.sigmoid(heads["collision"] + self.contact_logit(tool))
        reward, success = self.outcomes(tool, obj0, goal[:, None].expand_as(tool), grasp, temb)
        return pos, tool, grasp, collision, reward, success

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
    def encode(self, obs: dict[str, Any], task: str | list[str] | torch.Tensor | None = None) -> torch.Tensor:
        """Latent of observations. obs: proprio (B, 22) / objects (B, 7n) / goal (B, 3), or one
        unbatched observation; ``instruction`` (text) is used when present. -> (B, L)"""
        device = self.obs_mean.device
        tensors = {k: torch.as_tensor(obs[k], dtype=torch.float32, device=device)
                   for k in ("proprio", "objects", "goal") if k in obs}
        single = "proprio" in tensors and tensors["proprio"].dim() == 1
        if single:
            tensors = {k: v.unsqueeze(0) for k, v in tensors.items()}
        x = self.flat_obs(tensors)
        B = x.shape[0]
        n, P = self.spec.max_objects, self.spec.proprio_dim
        self.last_anchor = x[:, P:P + 7 * n].reshape(B, n, 7)[..., :3]
        self.last_tool = x[:, TOOL]
        self.last_finger = x[:, FINGER]
        self.last_goal = x[:, P + 7 * n:P + 7 * n + 3]
        self.last_context = self._make_context(B, task, obs.get("instruction"), device)
        return self.encode_flat(x, *self.last_context)

    def _make_context(self, B: int, task, instruction, device) -> tuple[torch.Tensor, torch.Tensor]:
        if task is None:
            task = self.spec.tasks[0]
        if isinstance(task, str):
            task = [task] * B
        if not isinstance(task, torch.Tensor):
            unknown = sorted(set(task) - set(self.spec.tasks))
            if unknown:
                raise ValueError(f"task {unknown[0]!r} is not one this model knows ({', '.join(self.spec.tasks)})")
            task = torch.tensor([self.spec.tasks.index(t) for t in task], device=device)
        instr = None
        if instruction is not None:
            texts = [instruction] * B if isinstance(instruction, str) else list(instruction)
            instr = instruction_tokens(texts)
        return self.task_context(task.to(device), instr)

    def imagine(self, z: torch.Tensor, actions: torch.Tensor,
                context: tuple[torch.Tensor, torch.Tensor] | None = None,
                anchor: torch.Tensor | None = None, tool: torch.Tensor | None = None,
                goal: torch.Tensor | None = None, finger: torch.Tensor | None = None) -> Imagined:
        """Roll latents forward under action sequences.

        Args:
            z: (B, L) start latents (or (1, L), broadcast to the B sequences).
            actions: (B, H, A) in [-1, 1].
            context: (task embedding, instruction embedding), each (B or 1, T); by default the one
                of the last ``encode`` call.
            anchor: (B or 1, N, 3) observed object positions at z; by default those of the last
                ``encode`` call, or the decoded ones when a context is passed without an anchor.
            tool: (B or 1, 3) observed tool position at z; defaults as ``anchor`` does.
            goal: (B or 1, 3) the goal position; defaults as ``anchor`` does.
            finger: (B or 1,) observed finger opening at z, for the gripper gate; defaults as
                ``anchor`` does, and without one (a context passed, no finger) there is no gate.
        Returns:
            Imagined with per-step latents, reward, and success / grasp / collision probabilities.
        """
        if actions.dim() != 3 or actions.shape[-1] != self.spec.action_dim:
            raise ValueError(f"actions have shape {tuple(actions.shape)}; expected (B, H, {self.spec.action_dim})")
        if context is None and self.last_context is None:
            raise RuntimeError("imagine() needs a context: call encode() first or pass context=")
        temb, _ = context if context is not None else self.last_context
        B, H, A = actions.shape
        L, N = self.cfg.latent_dim, self.spec.max_objects
        z = z.expand(B, -1) if z.shape[0] == 1 else z
        temb1 = temb  # (1 or B, T): a shared task embedding is read once
        temb = temb.expand(B, -1) if temb.shape[0] == 1 else temb
        # time-major, as the planner's path: every MLP's first layer split by input, so that
        # what is constant along a sequence (task, start latent) is one product, not H
        act_t = actions.transpose(0, 1)  # (H, B, A)
        inplace = not torch.is_grad_enabled()  # nothing differentiated: in-place work and buffers
        if inplace:  # the rollout writes into the buffer: no stack and no concatenation
            zs = torch.empty(H + 1, B, L, dtype=z.dtype, device=z.device)
            zs[0] = z
            self.rollout(z, act_t, temb1, out=zs[1:])
        else:
            zs = torch.cat((z[None], self.rollout(z, act_t, temb1)))  # (H + 1, B, L)
        rows = zs.view((H + 1) * B, L)
        hl1, hln, _, hout = self.heads
        task_share = torch.addmm(hl1.bias, temb1, hl1.weight[:, L:].T)  # (1 or B, Hd)
        block = self._block_rows(B)

        def read(r: torch.Tensor) -> torch.Tensor:
            return hout(F.silu(hln(self._with_share(r, hl1.weight[:, :L], task_share)), inplace=inplace))

        heads = self._decode(by_blocks(read, block, rows).view(H + 1, B, -1))  # steps 0 .. H
        obj_dec = heads["object_pos"]
        remembered = context is None and self.last_tool is not None
        if anchor is None:
            anchor = self.last_anchor if remembered else obj_dec[0]
        if tool is None:
            tool = self.last_tool if remembered else heads["tool_pos"][0]
        if goal is None:
            goal = self.last_goal if remembered else heads["goal"][0]
        if finger is None and remembered:
            finger = self.last_finger
        anchor = anchor.reshape(-1, N, 3).expand(B, N, 3)
        steps = rows[B:]  # z_1 .. z_H, (H * B, L)
        tl1, tln, _, tout = self.tool
        ml1, mln, _, mout = self.moved
        tool_share, moved_share = self._start_share(tl1, z, L), self._start_share(ml1, z, L)

        def path(r: torch.Tensor, summed: torch.Tensor) -> torch.Tensor:
            th = self._with_share(r, tl1.weight[:, L:2 * L], tool_share).addmm_(summed, tl1.weight[:, 2 * L:].T)
            return tout(F.silu(tln(th), inplace=inplace))

        def moved_logit(r: torch.Tensor) -> torch.Tensor:
            return mout(F.silu(mln(self._with_share(r, ml1.weight[:, L:], moved_share)), inplace=inplace))

        tool_pos = by_blocks(path, block, steps, act_t.cumsum(0).reshape(H * B, A)).view(H, B, 3) * 0.1 + tool.reshape(-1, 3)
        moved = torch.sigmoid(by_blocks(moved_logit, block, steps)).view(H, B, N)
        moved = (moved * touched(tool_pos.transpose(0, 1), anchor, 1).transpose(0, 1))[..., None]
        pos = anchor[None] + moved * (obj_dec[1:] - obj_dec[:1])  # (H, B, N, 3)
        obj0 = pos[:, :, 0]
        grasp = self.grasp_prob(heads["grasp"][1:], tool_pos, obj0)
        if finger is not None:  # the gripper gates, as in compose
            grasp = grasp * gripper_admits(finger.reshape(-1).expand(B), act_t[..., -1], tool_pos, obj0, 0,
                                            tool.reshape(-1, 3) - anchor[:, 0])
            obj0 = lift_gate(obj0, anchor[None, :, 0], grasp)
            pos = torch.cat((obj0[:, :, None], pos[:, :, 1:]), 2)
        collision = torch.sigmoid(heads["collision"][1:] + self.contact_logit(tool_pos))
        reward, success = self.outcomes(tool_pos, obj0, goal.reshape(-1, 3).expand(B, 3)[None].expand_as(tool_pos),
                                        grasp, temb1[None])
        return Imagined(zs.transpose(0, 1), reward.T, torch.sigmoid(success).T, grasp.T, collision.T,
                        pos.transpose(0, 1), tool_pos.transpose(0, 1))


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

    @torch.no_grad()
    def imagine_outcomes(self, z: torch.Tensor, actions: torch.Tensor, temb: torch.Tensor,
                         tool: torch.Tensor | None = None, anchor: torch.Tensor | None = None,
                         goal: torch.Tensor | None = None, finger: torch.Tensor | None = None
                         ) -> Outcomes:
        """The planner's lean path through ``imagine``: only what a cost reads.

        Same numbers as ``imagine`` (tests check it), computed time-major (``rollout``) and
        with the first layers of the heads, the moved gate and the tool path split by input as
        the dynamics' is. Only the first object's position is imagined (the rewards read no
        other).

        Args:
            z: (1 or S, L) start latent(s).
            actions: (H, S, A) time-major action sequences.
            temb: (1 or S, T) task embedding.
            tool: (1 or S, 3) observed tool position at z; decoded from z when None.
            anchor: (1 or S, N, 3) observed object positions at z; decoded from z when None.
            goal: (1 or S, 3) the goal; decoded from z when None.
            finger: (1 or S,) observed finger opening at z, for the gripper gate (none when None).
        Returns:
            Outcomes: reward, success and collision (H, S), the last latent (S, L), and the
            imagined grasp (H, S), tool and first object positions (H, S, 3) and goal.
        """
        L, A = self.cfg.latent_dim, self.spec.action_dim
        H, S, _ = actions.shape
        z0_in = z
        zs = self.rollout(z, actions, temb, out=torch.empty(H, S, L, dtype=z.dtype, device=z.device))
        z = zs[-1]
        hl1, hln, hact, hout = self.heads
        hw = hl1.weight
        task_head = torch.addmm(hl1.bias, temb, hw[:, L:].T)
        rows, block = zs.view(H * S, L), self._block_rows(S)

        def read(r: torch.Tensor) -> torch.Tensor:  # grasp, collision, object 0
            return torch.addmm(hout.bias[:5], hact(hln(self._with_share(r, hw[:, :L], task_head))), hout.weight[:5].T)

        out = by_blocks(read, block, rows).view(H, S, 5)
        first = self.read(z0_in.expand(temb.shape[0], -1) if z0_in.shape[0] == 1 else z0_in, temb)  # at z_0
        tool = first["tool_pos"] if tool is None else tool.reshape(-1, 3)
        goal = first["goal"] if goal is None else goal.reshape(-1, 3)
        obj0 = first["object_pos"][:, 0] if anchor is None else anchor.reshape(anchor.shape[0], -1, 3)[:, 0]
        # the moved gate and the tool path, their first layers split as the dynamics' is: the
        # start latent's share is a constant, the latents' (and summed actions') a product each
        tl1, tln, tact, tout = self.tool
        ml1, mln, mact, mout = self.moved
        tw, tool_share, moved_share = tl1.weight, self._start_share(tl1, z0_in, L), self._start_share(ml1, z0_in, L)

        def path(r: torch.Tensor, summed: torch.Tensor) -> torch.Tensor:
            return tout(tact(tln(self._with_share(r, tw[:, L:2 * L], tool_share).addmm_(summed, tw[:, 2 * L:].T))))

        def moved_logit(r: torch.Tensor) -> torch.Tensor:  # the first object's only
            mh = mact(mln(self._with_share(r, ml1.weight[:, L:], moved_share)))
            return torch.addmm(mout.bias[:1], mh, mout.weight[:1].T)

        tool_pos = by_blocks(path, block, rows, actions.cumsum(0).view(H * S, A)).view(H, S, 3).mul_(0.1).add_(tool)
        moved = torch.sigmoid(by_blocks(moved_logit, block, rows)).view(H, S, 1)
        moved = moved * touched(tool_pos, obj0, 0)[..., None]
        obj = obj0 + moved * (out[..., 2:5] * 0.1 + self.pos_offset - first["object_pos"][:, 0])
        collision = torch.sigmoid(out[..., 1] + self.contact_logit(tool_pos))
        grasp = self.grasp_prob(out[..., 0], tool_pos, obj)
        if finger is not None:  # the gripper gates, as in compose
            grasp = grasp * gripper_admits(finger, actions[..., -1], tool_pos, obj, 0, tool - obj0)
            obj = lift_gate(obj, obj0, grasp)
        reward, success = self.outcomes(tool_pos, obj, goal, grasp, temb[None])
        return Outcomes(reward, torch.sigmoid(success), collision, z, grasp, tool_pos, obj, goal)

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


def config_dict(spec: ModelSpec, cfg: ModelConfig) -> dict[str, Any]:
    return {"spec": {**asdict(spec), "tasks": list(spec.tasks)}, "model": asdict(cfg)}
