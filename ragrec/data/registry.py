"""The registry that picks a dataset loader by name, and which datasets are present."""

from __future__ import annotations

import os

from ragrec.data.base import Dataset, resolve_data_root
from ragrec.errors import ConfigError, DataError

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp", "label")


DATASETS = ("ml-100k", "bookcrossing", "amazon-beauty", "amazon-video-games", "synthetic")


def load_dataset(name: str, *, data_root: str | os.PathLike | None = None, **options) -> Dataset:
    """Load a dataset by name into canonical form.

    Args:
        name: one of :data:`DATASETS`.
        data_root: folder holding ``<name>/`` raw folders (default ``$RAGREC_DATA`` or
            ``data/raw``); ``ml-100k`` and ``synthetic`` need none.
        options: loader-specific keywords (e.g. ``k_core`` for Amazon, sizes for ``synthetic``).
    """
    # Imported here so that each loader module stays independent of the registry.
    from ragrec.data import amazon, bookcrossing, movielens, synthetic

    root = resolve_data_root(data_root)
    if name == "ml-100k":
        return movielens.load_ml100k(**options)
    if name == "bookcrossing":
        return bookcrossing.load_bookcrossing(root / name, **options)
    if name in amazon.CATEGORIES:
        return amazon.load_amazon(name, root / name, **options)
    if name == "synthetic":
        return synthetic.make_synthetic(**options)
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def dataset_available(name: str, *, data_root: str | os.PathLike | None = None) -> tuple[bool, str]:
    """Whether a dataset's files are present, and if not, the message saying what is missing.

    Cheap: only checks files exist, does not parse them.
    """
    from ragrec.data import amazon, bookcrossing, movielens

    root = resolve_data_root(data_root)
    try:
        if name == "ml-100k":
            movielens.locate_ml100k()
        elif name == "bookcrossing":
            bookcrossing.locate(root / name)
        elif name in amazon.CATEGORIES:
            amazon.locate(name, root / name)
        elif name != "synthetic":
            raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    except DataError as exc:
        return False, str(exc)
    return True, ""
