import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ragrec.errors import ConfigError
from ragrec.llm.backbone import tiny_backbone
from ragrec.metrics import auc
from ragrec.model.heads import ExitHeads
from ragrec.model.inference import for_inference
from ragrec.model.predict import predict_heads
from ragrec.model.readout import ReadoutFit, fit_readouts, head_states
from tests.model.test_train import learnable_task


def test_fitted_heads_answer_what_the_logistic_regression_answers():
    bb = tiny_backbone(num_layers=6, hidden_size=32, seed=0)
    heads = ExitHeads(bb, (2, 4, 6), readout=True)
    prompts, labels = learnable_task(bb, n=64)
    before = predict_heads(bb, heads, prompts)
    fit = ReadoutFit(c=1.0)
    fit_readouts(bb, heads, prompts, labels, fit, batch_size=8)
    after = predict_heads(bb, heads, prompts)

    states = head_states(bb, heads, prompts)
    for j in range(2):
        scaler = StandardScaler().fit(states[:, j])
        reference = LogisticRegression(C=fit.c, max_iter=fit.max_iter).fit(
            scaler.transform(states[:, j]), labels
        )
        np.testing.assert_allclose(
            after[:, j], reference.predict_proba(scaler.transform(states[:, j]))[:, 1], atol=1e-4
        )
    np.testing.assert_array_equal(after[:, -1], before[:, -1])  # the last head is the model's own
    assert auc(labels, after[:, 1]) > 0.9  # the word "good"/"bad" is linearly readable by layer 4


def test_fitting_needs_readouts_and_both_classes():
    bb = tiny_backbone(num_layers=6, hidden_size=32, seed=0)
    prompts, labels = learnable_task(bb, n=8)
    with pytest.raises(ConfigError, match="readout=True"):
        fit_readouts(bb, ExitHeads(bb, (2, 6)), prompts, labels)
    with pytest.raises(ConfigError, match="both classes"):
        fit_readouts(bb, ExitHeads(bb, (2, 6), readout=True), prompts, np.zeros(8))
    with pytest.raises(ConfigError, match="c > 0"):
        ReadoutFit(c=0)


def test_the_fold_holds_on_a_bf16_body():
    """On a bf16 body the fitted readouts are fp32 parameters, read out in fp32: the heads still
    answer what the logistic regression on their states answers (bf16 readouts would not hold
    ``β / σ − (W_Yes − W_No)`` to 1e-4)."""
    backbone = tiny_backbone(num_layers=6, hidden_size=32, seed=0)
    prompts, labels = learnable_task(backbone, n=64)
    merged, heads = for_inference(backbone, ExitHeads(backbone, (2, 4, 6), readout=True), torch.bfloat16)
    fit = ReadoutFit(c=1.0)
    fit_readouts(merged, heads, prompts, labels, fit, batch_size=8)
    assert {p.dtype for p in heads.readouts.parameters()} == {torch.float32}
    # the same batches as the fit's, so the bf16 body gives the very states the fit read
    after = predict_heads(merged, heads, prompts, batch_size=8)
    states = head_states(merged, heads, prompts, batch_size=8)
    for j in range(2):
        scaler = StandardScaler().fit(states[:, j])
        reference = LogisticRegression(C=fit.c, max_iter=fit.max_iter).fit(
            scaler.transform(states[:, j]), labels
        )
        # 1e-3, not 1e-4: a bf16 body leaves some state dimensions nearly constant, so β / σ and
        # the folded bias are large and cancel in fp32 (measured ≤ 3e-4; bf16 readouts: 2e-3)
        np.testing.assert_allclose(
            after[:, j], reference.predict_proba(scaler.transform(states[:, j]))[:, 1], atol=1e-3
        )
