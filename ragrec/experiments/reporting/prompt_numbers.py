"""What the prompt's numbers carry: time-respecting classical models on exactly the numbers a
prompt states (issue #28).

Every prompt (:mod:`ragrec.model.prompts`) states up to four numbers, each computed from training
interactions strictly before the sample: the target item's like share among its earlier raters,
the user's like share in the history window, and — with a retriever — how many of the ``vote_k``
nearest users rated the target before the sample (the vote count) and the share of them who
liked it (the vote share). :func:`prompt_number_features` rebuilds them; a logistic regression
and scikit-learn's ``HistGradientBoostingClassifier`` fitted on them, with and without the two
vote columns, say whether the retrieved users' vote adds information beyond the item's and the
user's shares on this data, independently of the LLM.

Feature columns (:data:`FEATURES`), per sample:

* ``item_share`` — logit of (likes + p) / (raters + 1), the item's earlier like share smoothed by
  one pseudo-rating at the training like rate p;
* ``user_share`` — logit of the history window's like share, clipped to [0.05, 0.95] (p when empty);
* ``vote_share`` — (vote likes + p) / (vote raters + 1), the smoothed share of polled raters who
  liked it;
* ``vote_count`` — log(1 + vote raters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ragrec.data import Samples
from ragrec.errors import ConfigError, DataError
from ragrec.experiments.reporting.baselines import history_like_share, item_likes_before

FEATURES = ("item_share", "user_share", "vote_share", "vote_count")
NO_VOTE = ("item_share", "user_share")
MODELS = ("lr", "gbdt")


@dataclass(frozen=True)
class PromptNumberConfig:
    """How the prompt-number models are fitted.

    Attributes:
        models: which of :data:`MODELS` ("lr": logistic regression, "gbdt": histogram gradient
            boosting).
        c: inverse L2 strength of the logistic regression.
        gbdt_iter: boosting iterations (``max_iter``) of the gradient-boosted model.
        gbdt_leaf: its ``min_samples_leaf`` (large: the features are few and noisy).
        seed: the gradient-boosted model's random state.
    """

    models: tuple[str, ...] = MODELS
    c: float = 1.0
    gbdt_iter: int = 100
    gbdt_leaf: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"unknown prompt-number model(s) {unknown}; choose from {MODELS}")
        if self.c <= 0 or self.gbdt_iter < 1 or self.gbdt_leaf < 1:
            raise ConfigError(
                f"need c > 0, gbdt_iter ≥ 1, gbdt_leaf ≥ 1; got {self.c}, {self.gbdt_iter}, {self.gbdt_leaf}"
            )


def vote_counts(
    train: pd.DataFrame,
    samples: Samples,
    neighbours: np.ndarray,
    vote_k: int,
    like_threshold: float,
    *,
    has_timestamps: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: (how many of the first ``vote_k`` neighbours rated the target strictly before the
    sample, how many of those ratings are likes) — the prompt's vote line.

    Args:
        train: training interactions (``user``, ``item``, ``rating``, ``timestamp``).
        neighbours: int ``[len(samples), ≥ vote_k]``, most similar first, ``-1`` for padding.
        like_threshold: a rating ≥ it is a like (``Dataset.like_threshold``).

    A neighbour who rated the target more than once counts by their latest rating before the
    sample; without timestamps every training rating counts, as in the prompt.
    """
    frame = samples.frame
    nb = np.asarray(neighbours, np.int64)[:, :vote_k]
    if nb.shape[0] != len(frame):
        raise DataError(f"neighbours has {nb.shape[0]} rows for {len(frame)} samples")
    n_items = int(max(train["item"].max(), frame["item"].max())) + 1
    ordered = train.sort_values("timestamp", kind="stable")
    keys = ordered["user"].to_numpy(np.int64) * n_items + ordered["item"].to_numpy(np.int64)
    stamps, ratings = ordered["timestamp"].to_numpy(np.int64), ordered["rating"].to_numpy(float)
    target = frame["item"].to_numpy(np.int64)
    # one sorted int64 per rating, (user, item) key then time: the latest rating of a key before a
    # time is the one just left of (key, time) in it
    base = int(min(stamps.min(initial=0), frame["timestamp"].min()))
    shift = np.int64(1 << 32)
    comp = keys * shift + (stamps - base)
    order = np.argsort(comp, kind="stable")
    comp, ratings = comp[order], ratings[order]
    times = frame["timestamp"].to_numpy(np.int64) - base if has_timestamps else np.full(len(frame), shift - 1)
    query = nb * n_items + target[:, None]
    pos = np.searchsorted(comp, query * shift + times[:, None], side="left")
    start = np.searchsorted(comp, query * shift, side="left")
    hit = (nb >= 0) & (pos > start)
    liked = hit & (ratings[np.where(hit, pos - 1, 0)] >= like_threshold)
    raters, likes = hit.sum(axis=1), liked.sum(axis=1)
    return raters, likes


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def prompt_number_features(
    train: pd.DataFrame,
    samples: Samples,
    n_items: int,
    votes: tuple[np.ndarray, np.ndarray] | None,
    *,
    has_timestamps: bool = True,
) -> pd.DataFrame:
    """The prompt's numbers per sample as model features (columns :data:`FEATURES`; the vote
    columns only when ``votes`` = (raters, likes) from :func:`vote_counts` is given)."""
    prior = float(train["label"].mean())
    n, liked = item_likes_before(train, samples, n_items, has_timestamps=has_timestamps)
    out = {
        "item_share": _logit((liked + prior) / (n + 1.0)),
        "user_share": _logit(np.clip(history_like_share(samples, prior), 0.05, 0.95)),
    }
    if votes is not None:
        raters, likes = votes
        out["vote_share"] = (likes + prior) / (raters + 1.0)
        out["vote_count"] = np.log1p(raters)
    return pd.DataFrame(out, index=samples.frame.index)


def fit_predict(
    model: str, x_train: np.ndarray, y: np.ndarray, x_test: np.ndarray, config: PromptNumberConfig
) -> np.ndarray:
    """P(label = 1) on ``x_test`` from ``model`` ("lr" or "gbdt") fitted on (``x_train``, ``y``).

    Raises:
        DataError: the training labels are all one class.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        raise DataError("the prompt-number models need both labels among the training samples")
    if model == "lr":
        est = LogisticRegression(C=config.c, max_iter=2000)
    else:
        est = HistGradientBoostingClassifier(
            max_iter=config.gbdt_iter, min_samples_leaf=config.gbdt_leaf, random_state=config.seed
        )
    est.fit(x_train, y)
    return est.predict_proba(x_test)[:, 1]


def prompt_number_scores(
    train_x: pd.DataFrame, y: np.ndarray, test_x: pd.DataFrame, config: PromptNumberConfig, *, tag: str = ""
) -> dict[str, np.ndarray]:
    """Scores of every configured model with the vote columns (``<model>_vote<tag>``, when
    ``train_x`` has them) and without (``<model>_shares<tag>``)."""
    sets = {"shares": list(NO_VOTE)}
    if "vote_share" in train_x.columns:
        sets["vote"] = list(FEATURES)
    return {
        f"{model}_{name}{tag}": fit_predict(
            model, train_x[cols].to_numpy(), y, test_x[cols].to_numpy(), config
        )
        for model in config.models
        for name, cols in sets.items()
    }
