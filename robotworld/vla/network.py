"""The VLA network: two cameras, proprioception and an instruction in; action chunks out.

- Vision: per camera a small CNN (strides 2, 2, 1, 1) whose last two layers are FiLM-modulated
  by the instruction, so that the words pick which object's features survive; a spatial softmax
  over a 1x1 conv's maps gives image keypoints, beside a linear read of the whole last map and
  its mean activation.
- Trunk: keypoints, pooled features, normalised proprioception and the projected sentence
  embedding -> an MLP -> the decision feature ``z`` (B, hidden).
- Action head: flow matching (rectified flow, as in pi0): a velocity field over the flattened
  chunk, integrated from Gaussian noise in ``flow_steps`` Euler steps, so that k noise draws give
  k distinct chunks.
- Estimator head: the target object's, the other objects' and the zone's positions from ``z``
  (an auxiliary loss in training; ``vla+imagine --state estimated`` imagines from it).

Shapes: images uint8 (B, S, S, 3) per camera; proprio (B, P); lang (B, 384); chunks (B, H, A).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robotworld.vla.configs import VLAConfig
from robotworld.vla.language import DIM, ENCODER


@dataclass
class VLASpec:
    """What the training data fixed: cameras, sizes and the proprio normalisation."""

    cameras: tuple[str, ...] = ("front", "wrist")
    image_size: int = 64
    proprio_dim: int = 22
    action_dim: int = 5
    max_objects: int = 2
    proprio_mean: list[float] = field(default_factory=list)
    proprio_std: list[float] = field(default_factory=list)
    encoder: str = ENCODER
    lang_dim: int = DIM


def _mlp(i: int, h: int, o: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for k in range(layers):
        mods += [nn.Linear(i if k == 0 else h, h), nn.LayerNorm(h), nn.Mish()]
    return nn.Sequential(*mods, nn.Linear(h if layers else i, o))


def spatial_softmax(x: torch.Tensor) -> torch.Tensor:
    """Expected image coordinates of each channel's softmax, in [-1, 1]. x: (B, C, h, w) -> (B, 2C)."""
    B, C, h, w = x.shape
    p = torch.softmax(x.flatten(2), -1).view(B, C, h, w)
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    return torch.cat(((p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)), -1)


class CameraEncoder(nn.Module):
    """One camera: conv layers, FiLM from the instruction on the last two; keypoints, a linear
    read of the last map and its mean."""

    def __init__(self, channels: tuple[int, ...], lang_dim: int, image_size: int, keypoints: int, flat: int) -> None:
        super().__init__()
        strides, kernels = (2, 2, 1, 1), (5, 3, 3, 3)
        if len(channels) != 4:
            raise ValueError(f"channels = {channels}: expected four conv widths")
        ins = (3, *channels[:-1])
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, k // 2) for i, o, k, s in zip(ins, channels, kernels, strides))
        self.norms = nn.ModuleList(nn.GroupNorm(min(8, c), c) for c in channels)
        self.filmed = (2, 3)
        self.film = nn.Linear(lang_dim, 2 * sum(channels[i] for i in self.filmed))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        # keypoint logits from a 1x1 conv without a ReLU, so that their scale (the softmax's
        # sharpness) is learned with the weights; and the whole last map through one linear layer,
        # which keeps where things are as well as what they are
        self.keypoints = nn.Conv2d(channels[-1], keypoints, 1)
        side = -(-image_size // 4)
        self.flat = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * side * side, flat), nn.LayerNorm(flat))
        self.out_dim = 2 * keypoints + flat + channels[-1]

    def forward(self, image: torch.Tensor, lang: torch.Tensor) -> torch.Tensor:
        """image: (B, 3, S, S) float in [-0.5, 0.5]; lang: (B, D) -> (B, out_dim)."""
        film = self.film(lang)
        x, used = image, 0
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x))
            if i in self.filmed:
                c = x.shape[1]
                gamma, beta = film[:, used:used + c], film[:, used + c:used + 2 * c]
                used += 2 * c
                x = x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
            x = F.relu(x)
        return torch.cat((spatial_softmax(self.keypoints(x)), self.flat(x), x.mean((2, 3))), -1)


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of flow times t (B,) in [0, 1] -> (B, dim)."""
    half = dim // 2
    freq = torch.exp(torch.linspace(0, math.log(1000.0), half, device=t.device, dtype=t.dtype))
    a = t[:, None] * freq[None] * math.pi
    return torch.cat((a.sin(), a.cos()), -1)


class VLA(nn.Module):
    """The vision-language-action network (see the module docstring)."""

    def __init__(self, spec: VLASpec, cfg: VLAConfig | None = None) -> None:
        super().__init__()
        self.spec, self.cfg = spec, cfg = spec, cfg or VLAConfig()
        self.cams = nn.ModuleDict({c: CameraEncoder(tuple(cfg.channels), spec.lang_dim, spec.image_size, cfg.keypoints,
                                                    cfg.flat) for c in spec.cameras})
        self.lang = nn.Sequential(nn.Linear(spec.lang_dim, cfg.lang), nn.Mish())
        feat = sum(m.out_dim for m in self.cams.values()) + spec.proprio_dim + cfg.lang
        self.trunk = _mlp(feat, cfg.hidden, cfg.hidden, layers=2)
        flat = cfg.chunk * spec.action_dim
        self.flow = _mlp(cfg.hidden + cfg.time_dim + flat, cfg.hidden, flat, layers=3)
        self.estimator = _mlp(cfg.hidden, cfg.hidden, 3 * spec.max_objects + 3, layers=1)
        mean = spec.proprio_mean or [0.0] * spec.proprio_dim
        std = spec.proprio_std or [1.0] * spec.proprio_dim
        self.register_buffer("proprio_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("proprio_std", torch.tensor(std, dtype=torch.float32))

    @property
    def device(self) -> torch.device:
        return self.proprio_mean.device

    def features(self, images: dict[str, torch.Tensor], proprio: torch.Tensor, lang: torch.Tensor) -> torch.Tensor:
        """The decision feature z (B, hidden). images: camera -> (B, S, S, 3) uint8 or
        (B, 3, S, S) float in [-0.5, 0.5]; proprio (B, P); lang (B, D) sentence embeddings."""
        parts = []
        for name, enc in self.cams.items():
            img = images[name]
            if img.dtype == torch.uint8:
                img = img.permute(0, 3, 1, 2).float() / 255.0 - 0.5
            parts.append(enc(img, lang))
        p = (proprio - self.proprio_mean) / self.proprio_std
        return self.trunk(torch.cat((*parts, p, self.lang(lang)), -1))

    def velocity(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The flow's velocity at chunks x (B, H*A) and times t (B,), given z (B, hidden)."""
        return self.flow(torch.cat((x, time_embedding(t, self.cfg.time_dim), z), -1))

    def sample(self, z: torch.Tensor, k: int, generator: torch.Generator | None = None,
               noise: float = 1.0) -> torch.Tensor:
        """k chunks per decision feature, integrated from noise. z: (B, hidden) -> (B, k, H, A),
        clipped to the action bounds [-1, 1]. noise: scale of the starting draw (0: the mean path)."""
        B, H, A = z.shape[0], self.cfg.chunk, self.spec.action_dim
        zk = z.repeat_interleave(k, 0)
        x = noise * torch.randn(B * k, H * A, generator=generator, device=z.device, dtype=z.dtype)
        n = self.cfg.flow_steps
        for i in range(n):
            t = torch.full((B * k,), i / n, device=z.device, dtype=z.dtype)
            x = x + self.velocity(x, t, zk) / n
        return x.view(B, k, H, A).clamp(-1.0, 1.0)

    def estimate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimated object positions (B, max_objects, 3) (the target first) and zone or goal
        position (B, 3), in metres, from z (B, hidden)."""
        e = self.estimator(z)
        n = self.spec.max_objects
        return e[:, :3 * n].view(-1, n, 3), e[:, 3 * n:]


def config_dict(spec: VLASpec, cfg: VLAConfig) -> dict:
    return {"spec": asdict(spec), "model": asdict(cfg)}
