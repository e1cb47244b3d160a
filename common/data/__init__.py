"""Datasets, task streams and federated partitions for fedreplay.

ds = load_dataset("mnist", root="/data")             # cached per process
stream = build_stream(cfg)                           # class | domain | permuted
mine = site_stream(stream, site=0, num_sites=4, cfg=cfg.partition, seed=cfg.seed)
"""

from .datasets import clear_cache, known_datasets, load_dataset
from .partition import parse_site_classes, partition_indices, site_stream
from .root import DatasetCorruptError, DatasetNotFoundError, cache_dir, resolve_data_root
from .streams import (
    build_stream,
    class_incremental,
    domain_incremental,
    parse_class_groups,
    permuted,
)
from .types import Dataset, Shape, Split, Task, TaskStream, concat

__all__ = [
    "Dataset",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "Shape",
    "Split",
    "Task",
    "TaskStream",
    "build_stream",
    "cache_dir",
    "class_incremental",
    "clear_cache",
    "concat",
    "domain_incremental",
    "known_datasets",
    "load_dataset",
    "parse_class_groups",
    "parse_site_classes",
    "partition_indices",
    "permuted",
    "resolve_data_root",
    "site_stream",
]
