"""Remember: rollouts collected into a durable, versioned dataset, and windows sampled from it.

    from robotworld.data import CollectConfig, Dataset, WindowSampler, collect

See ``robotworld.data.format`` for the on-disk schema.
"""

from robotworld.data.collect import CollectConfig, CollectResult, collect
from robotworld.data.dataset import Dataset
from robotworld.data.format import SCHEMA_VERSION, DatasetError

__all__ = ["SCHEMA_VERSION", "CollectConfig", "CollectResult", "Dataset", "DatasetError", "collect"]
