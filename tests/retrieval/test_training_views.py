"""Training views: no registered retriever lets a training sample's own target choose its neighbours.

The check is a counterfactual. Swap one training sample's target for an item its user never
interacted with (and flip its rating and label), in the training interactions and in the sample
alike, then build the retriever's training view (:meth:`Retriever.for_training`) again. A view
that never looks at the sample's own interaction gives the sample the same neighbours; one that
does (a plain GCN, whose graph holds the target's edge) changes them. It runs over every
registered retriever, and over two deliberately leaky ones that it must catch.
"""

import dataclasses

import numpy as np
import pytest

from ragrec.data import build_samples
from ragrec.llm.backbone import load_backbone
from ragrec.retrieval.base import Retriever, TrainingFolds
from ragrec.retrieval.factory import make_retriever, retriever_names
from ragrec.retrieval.gcn import GCNRetriever
from ragrec.retrieval.lightgcn import LightGCNConfig
from ragrec.retrieval.llm import LLMRetriever

FAST = LightGCNConfig(
    dim=16, batch_size=256, lr=5e-3, max_epochs=4, eval_every=2, patience=10, progress=False
)
SETTINGS = {"gcn": {"lightgcn": FAST}, "llm": {"history_items": 3, "batch_size": 16}}
K = 10  # neighbours compared per sample: enough that any change in the query shows
N_CHECKED = 2


class PlainGCN(GCNRetriever):
    """Leaky on purpose: the GCN serving training prompts as it is, target edges included."""

    def for_training(self, samples, folds):
        return self


class PlainLLM(LLMRetriever):
    """Leaky on purpose: the LLM retriever querying with the user's text, target included."""

    def for_training(self, samples, folds):
        return self


class CoRaters(Retriever):
    """Leaky on purpose: the users sharing most training items with the query user (the target
    among them), and no training view."""

    name = "co-raters"

    def _fit(self, train, valid) -> None:
        seq = self.sequences
        self._items = [
            set(seq.items[seq.offsets[u] : seq.offsets[u + 1]].tolist()) for u in range(self.n_users)
        ]

    def _retrieve(self, users, k, allowed, histories, precomputed) -> np.ndarray:
        out = np.full((len(users), k), -1, dtype=np.int64)
        for row, u in enumerate(users):
            shared = np.array([len(self._items[u] & other) for other in self._items], dtype=float)
            shared[~allowed[row]] = -1.0
            best = np.argsort(-shared, kind="stable")[:k]
            out[row] = np.where(shared[best] >= 0, best, -1)
        return out

    def for_training(self, samples, folds):
        return self


@pytest.fixture(scope="module")
def setting(synthetic):
    """The dataset, its split, its training samples, and the ids of each of the first
    ``N_CHECKED`` users' latest training sample (late: many candidates before it, and a target
    inside the LLM retriever's text window)."""
    ds, split = synthetic
    samples = build_samples(split, ds.n_users).part("train")
    latest = samples.frame.reset_index().groupby("user")["sample_id"].last()
    return ds, split, samples, latest.iloc[:N_CHECKED].tolist()


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny")


def swap_target(split_train, samples, sample_id):
    """The training interactions and samples with ``sample_id``'s target replaced by the most
    popular item its user never interacted with, rating and label flipped."""
    row = samples.frame.loc[sample_id]
    train = split_train.copy()
    own = (
        (train["user"] == row["user"])
        & (train["item"] == row["item"])
        & (train["timestamp"] == row["timestamp"])
    )
    assert own.sum() == 1
    seen = set(train.loc[train["user"] == row["user"], "item"])
    other = next(i for i in train["item"].value_counts().index if i not in seen)
    label = 1 - int(row["label"])
    rating = 5.0 if label else 1.0
    train.loc[own, ["item", "rating", "label"]] = [other, rating, label]
    frame = samples.frame.copy()
    frame.loc[sample_id, ["item", "rating", "label"]] = [other, rating, label]
    return train, dataclasses.replace(samples, frame=frame)


def changed_by_own_target(make, split, samples, sample_ids) -> list:
    """The ids among ``sample_ids`` whose training-view neighbours change when the sample's own
    interaction is swapped (:func:`swap_target`); empty for a leak-free view."""

    def view(train, samples):
        return make().fit(train).for_training(samples, TrainingFolds(train, n_folds=2, seed=0))

    original = view(split.train, samples)
    changed = []
    for sample_id in sample_ids:
        train, swapped = swap_target(split.train, samples, sample_id)
        before = original.neighbours(samples.subset([sample_id]), K)
        after = view(train, swapped).neighbours(swapped.subset([sample_id]), K)
        if before is None or after is None:
            assert before is None and after is None
            continue
        assert (before >= 0).any(), "a sample without candidates would check nothing"
        if not np.array_equal(before, after):
            changed.append(sample_id)
    return changed


@pytest.mark.parametrize("name", retriever_names())
def test_no_registered_retriever_lets_a_training_target_choose_its_neighbours(setting, tiny, name):
    ds, split, samples, ids = setting

    def make():
        return make_retriever(name, ds, backbone=tiny, **SETTINGS.get(name, {}))

    assert changed_by_own_target(make, split, samples, ids) == []


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda ds, tiny: PlainGCN(ds.n_users, ds.n_items, FAST), id="plain-gcn"),
        pytest.param(lambda ds, tiny: PlainLLM(ds, tiny, **SETTINGS["llm"]), id="plain-llm"),
        pytest.param(lambda ds, tiny: CoRaters(ds.n_users), id="co-raters"),
    ],
)
def test_the_check_catches_a_retriever_that_sees_its_training_targets(setting, tiny, make):
    ds, split, samples, ids = setting
    assert changed_by_own_target(lambda: make(ds, tiny), split, samples, ids) != []
