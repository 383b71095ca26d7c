"""Classical CTR predictors on the LLM's own test samples: where the LLM recommender stands.

Every baseline scores exactly the test samples the recommender is evaluated on
(:func:`ragrec.experiments.recommender.prepare.prepare_data` with the same profile and seed) and
is scored with the same AUC and bootstrap interval (:mod:`ragrec.metrics`):

* ``popularity`` — how many training interactions the target item has strictly before the
  sample's time (all of them when the dataset has no real timestamps). Not a probability: AUC
  only.
* ``logistic_regression`` — scikit-learn ``LogisticRegression`` on one-hot user id, one-hot item
  id and the item's attribute tokens (every item column but the title; comma/pipe/semicolon
  separated values become one token each, e.g. ``genres=Comedy``, ``year=1995``), fitted on
  *every* training-split CTR sample (uncapped: a classical model can afford them). A probability:
  AUC and LogLoss.
* ``logistic_regression_before`` — the same model, refitted per time bucket of the test samples
  (``BaselineConfig.time_buckets`` equal-count buckets by timestamp) on the training samples
  strictly before the bucket's first test sample, so no test sample's score rests on anything
  that happened after it: the same information rule the LLM's prompts follow (DESIGN §5). A
  bucket with too little earlier data to fit (one label only) gets the earlier like rate.
* ``lightgcn_score`` — LightGCN's own dot product ``e_u · e_i`` of the retriever's embeddings
  (the same trained model the GCN-Retriever uses, reloaded from its checkpoint), as a CTR score.
  The graph's edges are interactions, liked or not, so it scores "will interact" rather than
  "will like". AUC only.
* ``recent_mean_rating`` — the mean rating of the sample's own history window: the up to
  ``history_len`` most recent interactions of the user strictly before the sample, in the
  profile's ``history_scope`` (``"prior"``: every earlier interaction of the user, as the LLM's
  prompt shows it); the global training mean when empty.
  AUC only.
* ``prompt_shares`` — a logistic regression on the two like shares every prompt states
  (:mod:`ragrec.model.prompts`): the target item's share of likes among its earlier training ratings
  and the share of likes in the user's history window, fitted on every
  training-split sample. It shows how far the prompt's numbers alone carry, read off linearly: the
  reference the fine-tuned LLM is learning to reach. A probability: AUC and LogLoss.

``run_baselines`` (:mod:`ragrec.experiments.reporting.baseline_table`) also reads the
recommender's test predictions (final head) when present, so the table places the LLM among
them, with paired-bootstrap AUC differences (LLM − baseline) on the same samples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ragrec.data import Samples, UserSequences
from ragrec.errors import ConfigError, DataError

BASELINES = (
    "popularity",
    "logistic_regression",
    "logistic_regression_before",
    "lightgcn_score",
    "recent_mean_rating",
    "prompt_shares",
)
PROBABILISTIC = frozenset({"logistic_regression", "logistic_regression_before", "prompt_shares"})
"""Baselines whose scores are probabilities, so a LogLoss is meaningful."""

TABLE_COLUMNS = (
    "method",
    "kind",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "logloss",
    "n",
    "n_train",
    "llm_minus_baseline",
    "diff_ci_low",
    "diff_ci_high",
)
_SPLIT_TOKENS = re.compile(r"\s*[,|;]\s*")


@dataclass(frozen=True)
class BaselineConfig:
    """How the baselines are fitted and scored.

    Attributes:
        methods: which of :data:`BASELINES` to run.
        c: inverse L2 strength of the logistic regression.
        max_iter: its solver's iteration cap.
        attribute_columns: item columns used as attributes (None: every column but ``title``).
        time_buckets: test-time buckets of ``logistic_regression_before`` (one refit each).
        n_boot: bootstrap resamples for the intervals.
        seed: bootstrap seed.
    """

    methods: tuple[str, ...] = BASELINES
    c: float = 1.0
    max_iter: int = 2000
    attribute_columns: tuple[str, ...] | None = None
    time_buckets: int = 10
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in BASELINES]
        if unknown or not self.methods:
            raise ConfigError(f"unknown baseline(s) {unknown}; choose from {BASELINES}")
        if self.c <= 0 or self.max_iter < 1 or self.n_boot < 1 or self.time_buckets < 1:
            raise ConfigError(
                f"need c > 0, max_iter ≥ 1, time_buckets ≥ 1, n_boot ≥ 1; "
                f"got {self.c}, {self.max_iter}, {self.time_buckets}, {self.n_boot}"
            )


# --------------------------------------------------------------------------------------------
# the predictors


def item_likes_before(
    train: pd.DataFrame, samples: Samples, n_items: int, *, has_timestamps: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: (the target item's training interactions strictly before the sample's time,
    how many of them were likes) — every training interaction of it when ``has_timestamps`` is
    False. The counts the prompts state (:mod:`ragrec.model.prompts`), by the same lookup."""
    frame = samples.frame
    times = (
        frame["timestamp"].to_numpy(np.int64)
        if has_timestamps
        else np.full(len(frame), np.iinfo(np.int64).max)
    )
    by_item = UserSequences(train, int(train["user"].max()) + 1 if len(train) else 0).by_item(n_items)
    return by_item.likes_before(frame["item"].to_numpy(np.int64), times)


def popularity_scores(
    train: pd.DataFrame, samples: Samples, n_items: int, *, has_timestamps: bool = True
) -> np.ndarray:
    """Per sample: the target item's training interactions strictly before the sample's time
    (every training interaction of it when ``has_timestamps`` is False)."""
    return item_likes_before(train, samples, n_items, has_timestamps=has_timestamps)[0].astype(float)


def history_like_share(samples: Samples, fallback: float) -> np.ndarray:
    """Per sample: the share of likes in its history window (``fallback`` when it is empty)."""
    return _history_mean(samples, samples.sequences.labels, fallback)


def recent_mean_rating(samples: Samples, fallback: float) -> np.ndarray:
    """Per sample: the mean rating of its history (``fallback`` when the history is empty)."""
    return _history_mean(samples, samples.sequences.ratings, fallback)


def _history_mean(samples: Samples, values: np.ndarray, fallback: float) -> np.ndarray:
    frame = samples.frame
    out = np.full(len(frame), float(fallback))
    for j, (a, b) in enumerate(
        zip(frame["hist_start"].to_numpy(np.int64), frame["hist_end"].to_numpy(np.int64))
    ):
        if b > a:
            out[j] = float(values[a:b].mean())
    return out


def item_attribute_tokens(items: pd.DataFrame, columns: tuple[str, ...] | None = None) -> list[list[str]]:
    """Per item (by dense id): ``column=value`` tokens of its attributes; multi-valued cells
    (``"Action, Comedy"``) give one token per value, empty cells none."""
    cols = [c for c in items.columns if c != "title"] if columns is None else list(columns)
    absent = [c for c in cols if c not in items.columns]
    if absent:
        raise ConfigError(
            f"item attribute column(s) {absent} not in the dataset; it has {list(items.columns)}"
        )
    tokens: list[list[str]] = []
    for _, row in items[cols].iterrows():
        own = []
        for col in cols:
            own.extend(f"{col}={v}" for v in _SPLIT_TOKENS.split(str(row[col]).strip()) if v)
        tokens.append(own)
    return tokens


def _features(samples: Samples, item_tokens: list[list[str]]) -> list[dict[str, float]]:
    frame = samples.frame
    return [
        {f"user={u}": 1.0, f"item={i}": 1.0, **{t: 1.0 for t in item_tokens[i]}}
        for u, i in zip(frame["user"].to_numpy(np.int64), frame["item"].to_numpy(np.int64))
    ]


def logistic_regression_scores(
    train: Samples, test: Samples, items: pd.DataFrame, config: BaselineConfig = BaselineConfig()
) -> np.ndarray:
    """P(label = 1) from a logistic regression on user id, item id and item attribute tokens,
    fitted on ``train`` samples (ids/tokens never seen in training contribute nothing)."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    y = train.frame["label"].to_numpy(int)
    if len(np.unique(y)) < 2:
        raise DataError("the logistic regression needs both labels among the training samples")
    tokens = item_attribute_tokens(items, config.attribute_columns)
    vectorizer = DictVectorizer()
    x_train = vectorizer.fit_transform(_features(train, tokens))
    x_test = vectorizer.transform(_features(test, tokens))
    model = LogisticRegression(C=config.c, max_iter=config.max_iter, solver="lbfgs")
    model.fit(x_train, y)
    return model.predict_proba(x_test)[:, 1]


def logistic_regression_before_scores(
    train: Samples, test: Samples, items: pd.DataFrame, config: BaselineConfig = BaselineConfig()
) -> np.ndarray:
    """P(label = 1) from :func:`logistic_regression_scores` refitted per time bucket of ``test``.

    Test samples are cut into ``config.time_buckets`` equal-count buckets by timestamp; bucket b is
    scored by a model fitted on the training samples strictly before its earliest test sample.
    A bucket whose earlier training samples hold one label only gets their like rate (0.5 when
    there are none).
    """
    times = test.frame["timestamp"].to_numpy(np.int64)
    train_times = train.frame["timestamp"].to_numpy(np.int64)
    train_labels = train.frame["label"].to_numpy(int)
    out = np.empty(len(test))
    order = np.argsort(times, kind="stable")
    for rows in np.array_split(order, min(config.time_buckets, len(order))):
        earlier = np.flatnonzero(train_times < times[rows].min())
        if len(np.unique(train_labels[earlier])) < 2:
            out[rows] = train_labels[earlier].mean() if len(earlier) else 0.5
            continue
        fit_on = train.subset(train.frame.index[earlier])
        out[rows] = logistic_regression_scores(fit_on, test.subset(test.frame.index[rows]), items, config)
    return out


def prompt_share_scores(
    train_interactions: pd.DataFrame,
    train: Samples,
    test: Samples,
    n_items: int,
    *,
    has_timestamps: bool = True,
    config: BaselineConfig = BaselineConfig(),
) -> np.ndarray:
    """P(label = 1) from a logistic regression on the prompts' like shares, fitted on ``train``.

    Features: the logit of the item's like share among its earlier training ratings, smoothed
    towards the training like rate by one pseudo-rating (the prompt's "Share of earlier raters who
    liked this ..."), and the logit of the history window's like share (clipped to [0.05, 0.95];
    the prompt's "Share of recent ... the user liked").
    """
    from sklearn.linear_model import LogisticRegression

    y = train.frame["label"].to_numpy(int)
    if len(np.unique(y)) < 2:
        raise DataError("the prompt-share regression needs both labels among the training samples")
    prior = float(train_interactions["label"].mean())

    def features(samples: Samples) -> np.ndarray:
        n, likes = item_likes_before(train_interactions, samples, n_items, has_timestamps=has_timestamps)
        item = (likes + prior) / (n + 1.0)
        user = np.clip(history_like_share(samples, prior), 0.05, 0.95)
        return np.column_stack([np.log(item / (1 - item)), np.log(user / (1 - user))])

    model = LogisticRegression(C=config.c, max_iter=config.max_iter, solver="lbfgs")
    model.fit(features(train), y)
    return model.predict_proba(features(test))[:, 1]


def lightgcn_scores(user_embeddings: np.ndarray, item_embeddings: np.ndarray, samples: Samples) -> np.ndarray:
    """Per sample: ``e_u · e_i`` of the trained LightGCN read-out."""
    frame = samples.frame
    u = user_embeddings[frame["user"].to_numpy(np.int64)]
    i = item_embeddings[frame["item"].to_numpy(np.int64)]
    return np.einsum("nd,nd->n", u.astype(np.float64), i.astype(np.float64))
