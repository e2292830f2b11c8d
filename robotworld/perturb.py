"""Perturbations for evaluation: ``robotworld eval --perturb size=1.2,latency=1`` (and sweeps,
``size=0.8:1:1.2``). Each changes what its key names, the same in both engines:

- ``size``: the objects' half-sizes scaled (the task's ``object_half_size`` range times S);
- ``latency``: actions take effect K control steps late (``sims.wrappers.ActionLatency``);
- ``distractors``: that many distractor objects (``num_distractors``);
- ``obstacles``: that many obstacle boxes (``num_obstacles``).

Each key is one arm, and a sweep (several values of one key) one arm per value, so that each
perturbation's effect is seen alone. The unperturbed control arm (``nominal``) always runs beside
them on the same seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KEYS = ("size", "latency", "distractors", "obstacles")
LIMITS = {"size": (0.5, 2.0), "latency": (0, 10), "distractors": (0, 3), "obstacles": (0, 6)}
"""Accepted values: size as a scale, the rest as counts (obstacles up to what the sampler places,
``sims.tasks.MAX_OBSTACLES``; distractors as the scene holds)."""
NOT_YET = {"mass": "object mass", "friction": "object friction", "camera": "camera pose jitter"}


@dataclass(frozen=True)
class Perturbation:
    """One arm: its label ('nominal', 'size=1.2', 'latency=1') and its values."""

    label: str = "nominal"
    values: dict = field(default_factory=dict)

    def overrides(self, task_config) -> dict:
        """The task config fields this arm sets, given the task's config before it."""
        out = {}
        if "size" in self.values:
            lo, hi = task_config.object_half_size
            out["object_half_size"] = (lo * self.values["size"], hi * self.values["size"])
        if "distractors" in self.values:
            out["num_distractors"] = int(self.values["distractors"])
        if "obstacles" in self.values:
            out["num_obstacles"] = int(self.values["obstacles"])
        return out

    @property
    def latency(self) -> int:
        return int(self.values.get("latency", 0))


def parse(text: str | None) -> list[Perturbation]:
    """The arms a --perturb spelling asks for, the nominal one first; ValueError naming a bad key
    or value."""
    arms = [Perturbation()]
    if not text or not text.strip():
        return arms
    single: dict[str, float] = {}
    sweeps: list[tuple[str, list[float]]] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if key in NOT_YET:
            raise ValueError(f"perturbation '{key}' ({NOT_YET[key]}) is not supported yet; expected one of "
                             f"{', '.join(KEYS)}")
        if not sep or key not in KEYS:
            raise ValueError(f"perturbation '{item}': expected KEY=VALUE[:VALUE...] with KEY one of {', '.join(KEYS)}")
        try:
            vals = [float(v) for v in raw.split(":")]
        except ValueError:
            raise ValueError(f"perturbation '{item}': {raw!r} is not a number (or numbers joined by ':')") from None
        lo, hi = LIMITS[key]
        for v in vals:
            if not lo <= v <= hi or (key != "size" and v != int(v)):
                kind = "a scale" if key == "size" else "a whole number"
                raise ValueError(f"perturbation {key} = {v:g}: expected {kind} in [{lo}, {hi}]")
        if len(vals) == 1:
            single[key] = vals[0]
        else:
            sweeps.append((key, vals))
    for key, vals in [(k, [v]) for k, v in single.items()] + sweeps:
        arms += [Perturbation(f"{key}={v:g}", {key: v}) for v in vals]
    labels = [a.label for a in arms]
    if len(set(labels)) < len(labels):
        raise ValueError(f"perturbations '{text}': an arm is given twice")
    return arms
