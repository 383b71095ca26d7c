"""End-to-end requests: the rows of the paper's pipeline and ours on the whole step's outputs,
their agreement with the saved predictions, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ragrec.config import DIFFERENCE, E2E_METHODS
from ragrec.errors import ConfigError
from ragrec.experiments.early_exit.end_to_end import E2E_RETRIEVER, Pipeline, run_end_to_end
from ragrec.experiments.early_exit.operating_point import ExitPoint

ATOL = 1e-5


def e2e_rows(step):
    table = step.out["early_exit"]
    return table[table["method"].str.startswith("e2e_")].set_index("method")


def test_end_to_end_requests_reproduce_the_saved_predictions(step):
    """The GCN and LLM pipelines, retrieving at query time, give the recommender's saved P(Yes);
    the exit pipeline exits where the sweep's replay does."""
    e2e = e2e_rows(step)
    assert (e2e["max_abs_diff_vs_saved"] < ATOL).all()
    assert e2e.loc["e2e_gcn_exit", "exit_agreement"] == 1.0
    assert e2e.loc[["e2e_llm_full", "e2e_gcn_full"], "exit_agreement"].isna().all()


def test_one_row_per_method_with_stage_splits(step):
    e2e = e2e_rows(step)
    assert list(e2e.index) == list(E2E_METHODS)
    shares = e2e[["retrieval_share", "prompt_share", "model_share"]].to_numpy()
    assert np.isfinite(shares).all()
    np.testing.assert_allclose(shares.sum(1), 1.0)
    assert (e2e[["retrieval_ms", "prompt_ms", "model_ms"]] > 0).all().all()
    assert (e2e["n"] == 12).all() and (e2e["reference"] == "e2e_llm_full").all()
    assert e2e.loc["e2e_llm_full", "speedup_vs_full"] == 1.0
    assert e2e["speedup_efficiency"].isna().all()  # the model stage's compute bound does not bound a pipeline


def test_the_exit_pipeline_runs_at_the_operating_point(step):
    e2e = e2e_rows(step)
    sweep = step.out["threshold_sweep"]
    op = sweep[sweep["operating_point"]].iloc[0]
    assert (e2e.loc["e2e_gcn_exit", "form"], e2e.loc["e2e_gcn_exit", "tau"]) == (op["form"], op["tau"])
    assert e2e.loc["e2e_gcn_exit", "role"] == "operating_point"
    assert (e2e.loc[["e2e_llm_full", "e2e_gcn_full"], "form"] == "none").all()


def test_every_method_has_a_retriever():
    assert set(E2E_RETRIEVER) == set(E2E_METHODS)


@pytest.mark.parametrize(
    ("requests", "retrievers", "match"),
    [
        pytest.param([], {"gcn": None, "llm": None}, "no requests", id="no-requests"),
        # only the requests' length is read before the check
        pytest.param([object()], {"gcn": None}, r"retriever\(s\) \['llm'\]", id="llm-retriever-missing"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_backbone, tiny_heads, requests, retrievers, match):
    pipeline = Pipeline(retrievers, builder=None, backbone=tiny_backbone, heads=tiny_heads)
    with pytest.raises(ConfigError, match=match):
        run_end_to_end(requests, pipeline, ExitPoint(DIFFERENCE, 0.1))
