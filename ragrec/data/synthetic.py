"""A synthetic dataset generated in-process, for tests and the smoke profile.

Users and items belong to planted communities ("genres"). Each user draws items with
probability ∝ exp(sharpness · affinity) where ``affinity = u·v`` of latent vectors that cluster by
community, and rates them ``clip(round(2.5 + 1.5·affinity + noise), 1, 5)`` (about 60% positives).
So the graph has community structure a GCN can find, the label ``rating > 3`` is learnable from
who liked what, and a user's history predicts the next label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ragrec.data.base import Dataset, RowCounts, canonicalize
from ragrec.errors import ConfigError

_GENRES = ("Mystery", "Comedy", "Space", "Romance", "History", "Horror", "Cooking", "Sports")
_ADJECTIVES = ("Silent", "Golden", "Last", "Hidden", "Broken", "Little", "Endless", "Wild", "Lost", "Bright")
_NOUNS = ("River", "Garden", "Empire", "Letter", "Island", "Machine", "Winter", "Voyage", "Secret", "City")


def _check_sizes(
    n_users: int, n_items: int, n_communities: int, min_per_user: int, max_per_user: int
) -> None:
    if n_communities < 1 or n_communities > len(_GENRES):
        raise ConfigError(f"n_communities must be in 1..{len(_GENRES)}, got {n_communities}")
    if not 1 <= min_per_user <= max_per_user <= n_items:
        raise ConfigError(
            f"need 1 ≤ min_per_user ≤ max_per_user ≤ n_items, got {min_per_user}, {max_per_user}, {n_items}"
        )
    if n_users < 2:
        raise ConfigError(f"n_users must be ≥ 2, got {n_users}")


def make_synthetic(
    *,
    n_users: int = 200,
    n_items: int = 300,
    n_communities: int = 4,
    min_per_user: int = 20,
    max_per_user: int = 40,
    dim: int = 8,
    sharpness: float = 2.0,
    seed: int = 0,
) -> Dataset:
    """Generate the dataset (sizes as arguments; deterministic under ``seed``).

    Each user has between ``min_per_user`` and ``max_per_user`` distinct interactions.
    """
    _check_sizes(n_users, n_items, n_communities, min_per_user, max_per_user)
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_communities, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    user_comm = rng.integers(n_communities, size=n_users)
    item_comm = rng.integers(n_communities, size=n_items)
    users = centers[user_comm] + 0.5 * rng.normal(size=(n_users, dim)) / np.sqrt(dim)
    items = centers[item_comm] + 0.5 * rng.normal(size=(n_items, dim)) / np.sqrt(dim)
    affinity = users @ items.T  # [n_users, n_items], roughly in [-1.5, 1.5]

    rows = []
    for u in range(n_users):
        n = int(rng.integers(min_per_user, max_per_user + 1))
        weights = np.exp(sharpness * affinity[u])
        chosen = rng.choice(n_items, size=n, replace=False, p=weights / weights.sum())
        ratings = np.clip(np.rint(2.5 + 1.5 * affinity[u, chosen] + 0.7 * rng.normal(size=n)), 1, 5)
        # Seconds: each user starts somewhere in a year and rates every few hours to days.
        times = int(rng.integers(0, 365 * 86400)) + np.cumsum(rng.integers(3600, 5 * 86400, size=n))
        rows.append(pd.DataFrame({"user": u, "item": chosen, "rating": ratings, "timestamp": times}))
    raw = pd.concat(rows, ignore_index=True)

    titles = [
        f"The {_ADJECTIVES[rng.integers(len(_ADJECTIVES))]} {_NOUNS[rng.integers(len(_NOUNS))]} {i}"
        for i in range(n_items)
    ]
    item_table = pd.DataFrame(
        {
            "title": titles,
            "genres": [_GENRES[c] for c in item_comm],
            "year": rng.integers(1950, 2020, size=n_items).astype(str),
        }
    )
    user_table = pd.DataFrame({"community": [_GENRES[c] for c in user_comm]})
    return canonicalize(
        "synthetic",
        raw,
        item_table,
        user_table,
        label=lambda r: r > 3,
        label_rule="rating > 3",
        has_timestamps=True,
        counts=RowCounts(source="the synthetic generator", rows_read=len(raw)),
    )
