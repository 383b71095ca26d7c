"""Datasets in one canonical form, CTR samples with leakage-free histories, and splits."""

from ragrec.data.base import DROP_REASONS, METADATA_REASONS, Dataset
from ragrec.data.registry import DATASETS, dataset_available, load_dataset, raw_files
from ragrec.data.samples import Samples, UserSequences, build_samples, cap_samples
from ragrec.data.split import SPLIT_METHODS, Split, split_interactions
from ragrec.data.stats import dataset_statistics, loading_report

__all__ = [
    "DATASETS",
    "DROP_REASONS",
    "METADATA_REASONS",
    "SPLIT_METHODS",
    "Dataset",
    "Samples",
    "Split",
    "UserSequences",
    "build_samples",
    "cap_samples",
    "dataset_available",
    "dataset_statistics",
    "load_dataset",
    "loading_report",
    "raw_files",
    "split_interactions",
]
