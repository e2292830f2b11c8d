"""More ways to say each task, for training the VLA (``train policy --paraphrase P``).

The simulator's tasks phrase each instruction with one of three templates
(``sims.tasks``), so a VLA trained on them alone learns those sentences more than their
meaning: unseen phrasings fell from 81 to 70 on pick_place (docs/experiments.md, 2026-12-07).
Training with probability P rewrites an episode's instruction with one of these instead, its
object and zone kept. They are disjoint from the held-out phrasings of
``configs/paraphrases/`` (a test checks), which stay the measure of generalisation.

Templates name ``{object}`` (e.g. "red cube") and ``{target}`` (e.g. "blue zone", or reach's
"green marker"), as ``robotworld eval --paraphrases`` files do.
"""

from __future__ import annotations

import re

PHRASINGS: dict[str, tuple[str, ...]] = {
    "reach": ("place the gripper at the {target}", "head for the {target}",
              "the gripper should end up at the {target}", "please reach for the {target}",
              "position the gripper at the {target}", "approach the {target}",
              "steer the gripper toward the {target}", "get the gripper to the {target}"),
    "push": ("push the {object} toward the {target}", "move the {object} onto the {target} by pushing it",
             "without lifting it, move the {object} to the {target}", "please push the {object} onto the {target}",
             "the {object} needs to be pushed to the {target}", "poke the {object} onto the {target}",
             "drive the {object} into the {target}", "keep the {object} on the table and push it to the {target}"),
    "lift": ("pick the {object} up", "lift up the {object}", "please lift the {object}",
             "elevate the {object}", "the {object} should be lifted", "can you pick up the {object}",
             "seize the {object} and pull it upward", "lift the {object} from the table"),
    "pick_place": ("pick up the {object} and put it in the {target}", "move the {object} into the {target}",
                   "please place the {object} in the {target}", "transfer the {object} to the {target}",
                   "the {object} goes in the {target}", "lift the {object} and place it on the {target}",
                   "can you put the {object} on the {target}", "deliver the {object} to the {target}",
                   "relocate the {object} onto the {target}"),
}
PHRASINGS["pick_place_clutter"] = PHRASINGS["pick_place"]


def _patterns(task: str) -> list[re.Pattern]:
    from sims import tasks

    templates = {"reach": tasks.REACH_TEMPLATES, "push": tasks.PUSH_TEMPLATES, "lift": tasks.LIFT_TEMPLATES,
                 "pick_place": tasks.PLACE_TEMPLATES, "pick_place_clutter": tasks.PLACE_TEMPLATES}[task]
    out = []
    for t in templates:
        rx = re.escape(t).replace(r"\{obj\}", r"(?P<object>.+?)").replace(r"\{zone\}", r"(?P<zone>\w+)")
        out.append(re.compile(rx))
    return out


def slots(task: str, instruction: str) -> dict[str, str] | None:
    """The object and target an instruction of the simulator's templates names, or None when it
    is not one of them (a dataset collected with other phrasings is then left as it is)."""
    if task not in PHRASINGS:
        return None
    for p in _patterns(task):
        m = p.fullmatch(instruction.strip())
        if m:
            g = m.groupdict()
            out = {"object": g["object"]} if g.get("object") else {}
            if task == "reach":
                out["target"] = "green marker"
            elif g.get("zone"):
                out["target"] = f"{g['zone']} zone"
            return out
    return None


def rewrites(task: str, instruction: str) -> list[str]:
    """Every training phrasing of this instruction (none when its slots cannot be read)."""
    s = slots(task, instruction)
    return [] if s is None else [t.format(**s) for t in PHRASINGS[task]]
