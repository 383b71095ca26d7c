"""What predictors see: the later-interaction share and the vote coverage on hand-made events."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ragrec.data import Samples, UserSequences
from ragrec.experiments.recommender.information import (
    INFORMATION,
    later_interaction_share,
    vote_coverage,
)


def _events(users, items, times) -> pd.DataFrame:
    return pd.DataFrame(
        {"user": users, "item": items, "rating": np.float32(4), "timestamp": times, "label": np.int8(1)}
    )


def test_later_interaction_share_counts_neighbour_events_after_each_sample():
    train = UserSequences(_events([1, 1, 1, 2], [5, 6, 7, 8], [10, 20, 30, 40]), 3)
    # sample at t=25 with neighbours 1, 2: user 1 has one event after (30), user 2 one (40): 2 of 4
    assert later_interaction_share(train, np.array([[1, 2]]), np.array([25])) == 0.5
    assert later_interaction_share(train, np.array([[1, -1]]), np.array([100])) == 0.0
    assert np.isnan(later_interaction_share(train, np.array([[-1, -1]]), np.array([0])))


def test_vote_coverage_needs_a_polled_neighbour_who_rated_the_target_before_the_sample():
    train = UserSequences(_events([1, 2], [7, 7], [10, 50]), 3)
    frame = pd.DataFrame(
        {
            "user": [0, 0, 0],
            "item": [7, 7, 8],
            "label": 1,
            "timestamp": [20, 5, 100],
            "hist_start": 0,
            "hist_end": 0,
        }
    )
    samples = Samples(frame, train, 5, "train")
    neighbours = np.array([[2, 1], [1, 2], [1, 2]])
    # row 0: user 1 rated 7 at 10 < 20 (polled only with vote_k=2); row 1: both too late; row 2: other item
    assert vote_coverage(train, samples, neighbours, vote_k=2) == 1 / 3
    assert vote_coverage(train, samples, neighbours, vote_k=1) == 0.0


def test_the_information_table_names_every_baseline():
    from ragrec.experiments.reporting.baselines import BASELINES

    assert set(BASELINES) <= set(INFORMATION["predictor"])
