"""The registry that picks a dataset loader by name, the raw files each reads, and which
datasets are present."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

# By full module name: `from ragrec.data import ...` would import this package's __init__ back.
from ragrec.data.amazon import CATEGORIES, load_amazon
from ragrec.data.amazon import raw_files as amazon_files
from ragrec.data.base import Dataset
from ragrec.data.bookcrossing import load_bookcrossing
from ragrec.data.bookcrossing import raw_files as bookcrossing_files
from ragrec.data.movielens import load_ml100k
from ragrec.data.movielens import raw_files as ml100k_files
from ragrec.data.raw import resolve_data_root
from ragrec.data.synthetic import make_synthetic
from ragrec.errors import ConfigError, DataError


@dataclass(frozen=True)
class Loader:
    """How to load one dataset from its folder ``<data_root>/<name>/``.

    Attributes:
        load: ``load(folder, **options) -> Dataset``.
        files: ``files(folder) -> [Path]``, the raw files ``load`` reads; raises a
            :class:`DataError` saying what is missing and where to get it.
    """

    load: Callable[..., Dataset]
    files: Callable[[Path], list[Path]]


def _bundled_ml100k(folder: Path, **options) -> Dataset:
    return load_ml100k(**options)  # inside the recbole wheel, whatever the data root


LOADERS: dict[str, Loader] = {
    "ml-100k": Loader(_bundled_ml100k, lambda folder: ml100k_files()),
    "bookcrossing": Loader(load_bookcrossing, bookcrossing_files),
    **{name: Loader(partial(load_amazon, name), partial(amazon_files, name)) for name in CATEGORIES},
    # Generated in-process: its "raw data" is the generator's code.
    "synthetic": Loader(lambda folder, **options: make_synthetic(**options), lambda folder: []),
}

DATASETS = tuple(LOADERS)


def _loader(name: str) -> Loader:
    if name not in LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return LOADERS[name]


def load_dataset(name: str, *, data_root: str | os.PathLike | None = None, **options) -> Dataset:
    """Load a dataset by name into canonical form.

    Args:
        name: one of :data:`DATASETS`.
        data_root: folder holding ``<name>/`` raw folders (default ``$RAGREC_DATA`` or
            ``data/raw``); ``ml-100k`` and ``synthetic`` need none.
        options: loader-specific keywords (e.g. ``k_core_min`` for Amazon, sizes for ``synthetic``).
    """
    return _loader(name).load(resolve_data_root(data_root) / name, **options)


def raw_files(name: str, *, data_root: str | os.PathLike | None = None) -> list[Path]:
    """The raw files :func:`load_dataset` reads for ``name`` (none for ``synthetic``).

    Raises:
        DataError: a file is absent; the message says which and where to get it.
    """
    return _loader(name).files(resolve_data_root(data_root) / name)


def dataset_available(name: str, *, data_root: str | os.PathLike | None = None) -> tuple[bool, str]:
    """Whether a dataset's files are present, and if not, the message saying what is missing.

    Cheap: only checks files exist, does not parse them.
    """
    try:
        raw_files(name, data_root=data_root)
    except DataError as exc:
        return False, str(exc)
    return True, ""
