"""weightcast stage **collect**: train many zoo runs and record every parameter's per-epoch history
into webdataset tar shards (one folder per layer type), with an index and a reader.

Pipeline: zoo <- **collect** <- train_predictor <- eval.

    from weightcast.collect import Collection
    for h in Collection("runs/collect/debug").histories(layer_type="linear"):
        h.values  # (T, *shape)
"""

from weightcast.collect.config import CollectConfig, expand, load_collect_config, run_id
from weightcast.collect.engines import CollectResult, run_collection
from weightcast.collect.errors import CollectError, CorruptShardError
from weightcast.collect.index import build_index, write_index
from weightcast.collect.reader import Collection
from weightcast.collect.schema import SCHEMA_VERSION, ParamHistory, decode_sample

__all__ = [
    "SCHEMA_VERSION",
    "CollectConfig",
    "CollectError",
    "CollectResult",
    "Collection",
    "CorruptShardError",
    "ParamHistory",
    "build_index",
    "decode_sample",
    "expand",
    "load_collect_config",
    "run_collection",
    "run_id",
    "write_index",
]
