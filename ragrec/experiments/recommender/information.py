"""What each predictor may see, and two measurements of how prompts use other users' data.

DESIGN §5 asks that every predictor in a table see the same interactions, or that the table say
which sees more. :data:`INFORMATION` states it per predictor for the baselines chapter, and two
measurements back the statements with numbers from the run itself:

* :func:`later_interaction_share`: of the retrieved neighbours' *training* interactions, the
  share that come after the sample's time. The prompt never shows them (its neighbour lines and
  vote are time-filtered), but the retriever used them to choose the neighbours: the LightGCN is
  trained once on every training interaction, the paper's setup.
* :func:`vote_coverage`: the share of prompts in which at least one of the ``vote_k`` polled
  neighbours rated the target before the sample. If training prompts reach a higher coverage
  than test prompts, the model learns to lean on a line that is emptier at test time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ragrec.data import Samples, UserSequences

INFORMATION = pd.DataFrame(
    [
        (
            "LLM (prompt)",
            "target user: every earlier interaction (history_scope 'prior')",
            "training interactions strictly before the sample (neighbour lines, vote, item like share)",
            "neighbours chosen by a retriever fitted on all training interactions",
        ),
        (
            "logistic_regression",
            "target user: training samples",
            "all training samples, including later ones",
            "sees interactions after the test sample",
        ),
        (
            "logistic_regression_before",
            "target user: training samples before the test-time bucket",
            "training samples before the test-time bucket",
            "never sees later interactions",
        ),
        (
            "prompt_shares",
            "target user: history window (as the prompt)",
            "item like share before the sample (as the prompt); fit on all training samples",
            "coefficients fitted on later samples",
        ),
        ("recent_mean_rating", "target user: history window (as the prompt)", "none", "—"),
        ("popularity", "none", "training interactions strictly before the sample", "—"),
        (
            "lightgcn_score",
            "target user: training interactions",
            "all training interactions, including later ones (the retriever's LightGCN)",
            "sees interactions after the test sample",
        ),
    ],
    columns=["predictor", "target user's data", "other users' data", "note"],
)
"""One row per predictor: what it may see of the target user and of other users."""


def later_interaction_share(train: UserSequences, neighbours: np.ndarray, times: np.ndarray) -> float:
    """Share of the neighbours' training interactions that come after the sample.

    Args:
        train: the training interactions (the retriever's ``sequences``).
        neighbours: ``[n, k]`` neighbour user ids per sample, ``-1`` for padding.
        times: ``[n]`` the samples' timestamps.

    Returns:
        later / all over every (sample, neighbour) pair; NaN without any neighbour interaction.
    """
    later = total = 0
    for row, time in zip(np.asarray(neighbours), np.asarray(times, np.int64)):
        for user in row[row >= 0]:
            stamps = train.timestamps[train.offsets[user] : train.offsets[user + 1]]
            later += int((stamps > time).sum())
            total += len(stamps)
    return later / total if total else float("nan")


def vote_coverage(train: UserSequences, samples: Samples, neighbours: np.ndarray, vote_k: int) -> float:
    """Share of samples where ≥ 1 of the first ``vote_k`` neighbours rated the target before it.

    Args:
        train: the training interactions the prompts read neighbours from.
        samples: the CTR samples (target item and time per row).
        neighbours: ``[len(samples), ≥ vote_k]`` retrieved users per sample, ``-1`` for padding.
        vote_k: how many neighbours the prompt polls.
    """
    first_rating = (
        pd.DataFrame({"user": train.users, "item": train.items, "t": train.timestamps})
        .groupby(["user", "item"])["t"]
        .min()
    )
    frame = samples.frame
    covered = 0
    for row, item, time in zip(
        np.asarray(neighbours)[:, :vote_k], frame["item"].to_numpy(), frame["timestamp"].to_numpy()
    ):
        users = row[row >= 0]
        keys = pd.MultiIndex.from_arrays([users, np.full(len(users), item)])
        stamps = first_rating.reindex(keys).to_numpy()
        covered += bool((stamps < time).any())
    return covered / len(frame) if len(frame) else float("nan")
