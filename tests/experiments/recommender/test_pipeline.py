"""The recommender experiment runs end to end on the smoke profile and reloads instead of
retraining on a rerun."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ragrec.config import PROFILES, BetaStudy, CFSettings, get_profile
from ragrec.errors import ConfigError
from ragrec.experiments.recommender.contexts import mixed_contexts
from ragrec.experiments.recommender.pipeline import run_recommender
from ragrec.metrics import auc


def small_smoke():
    p = get_profile("smoke")
    return dataclasses.replace(
        p,
        data=dataclasses.replace(
            p.data, train_cap=48, valid_cap=32, test_cap=48, synthetic_users=60, synthetic_items=80
        ),
        train=dataclasses.replace(p.train, epochs=1),
        evaluation=dataclasses.replace(p.evaluation, reduced_cap=24),
        beta_study=BetaStudy(seeds=(0, 1), train_cap=24, epochs=1, valid_cap=16, curve_points=2),
        cf=CFSettings(train_cap=24),
    )


def test_recommender_writes_heads_predictions_and_provenance_and_reloads(tmp_path):
    profile = small_smoke()
    heads = run_recommender(profile, results_root=tmp_path, progress=False)
    out = tmp_path / "smoke" / "synthetic"
    table = pd.read_csv(out / "heads.csv")
    assert {"context", "variant", "beta", "head_layer", "auc", "auc_ci_low", "auc_ci_high", "logloss"} <= set(
        table.columns
    )
    assert set(table["context"]) == set(profile.contexts)
    study = {f"study_beta{b}_seed{s}" for b in ("0.1", "0") for s in (0, 1)}
    assert set(table["variant"]) == {"main", "fp32", "cf"} | study
    # the profile scores in bf16; the fp32 check is paired with the bf16 scores on its samples
    fp32, bf16 = pd.read_csv(out / "predictions_gcn_fp32.csv"), pd.read_csv(out / "predictions_gcn.csv")
    paired = bf16.set_index("sample_id").loc[fp32["sample_id"]]
    assert 0 < np.abs(paired["p_head_6"].to_numpy() - fp32["p_head_6"].to_numpy()).max() < 0.05
    assert (table["auc_ci_low"] <= table["auc"]).all() and (table["auc"] <= table["auc_ci_high"]).all()
    # Every AUC can be recomputed from the saved per-sample predictions.
    preds = pd.read_csv(out / "predictions_gcn.csv")
    row = table[(table["context"] == "gcn") & (table["variant"] == "main") & (table["head_layer"] == 6)].iloc[
        0
    ]
    assert auc(preds["label"], preds["p_head_6"]) == pytest.approx(row["auc"])
    assert (out / "provenance.json").exists() and (out / "training.csv").exists()
    # Vote coverage and later-interaction shares of training prompts (plain and as trained) and test.
    info = pd.read_csv(out / "information.csv")
    assert set(info["set"]) == {"train (plain)", "train (as trained)", "test"} and set(info["context"]) == {
        "gcn",
        "llm",
    }
    assert info["vote_coverage"].between(0, 1).all() and info["later_share"].between(0, 1).all()
    # Validation predictions of every head are saved for the choices made on them.
    valid = pd.read_csv(out / "predictions_valid_gcn.csv")
    assert len(valid) == profile.data.valid_cap and {"p_head_2", "p_head_4", "p_head_6"} <= set(valid.columns)

    # A rerun loads the finished checkpoints: same numbers, no new training.
    again = run_recommender(profile, results_root=tmp_path, progress=False)
    np.testing.assert_allclose(again["auc"].to_numpy(), heads["auc"].to_numpy(), atol=1e-9)


def test_reduced_contexts_and_the_beta_study_score_a_paired_subset_of_the_full_contexts_samples(tmp_path):
    profile = small_smoke()
    table = run_recommender(profile, results_root=tmp_path, progress=False)
    out = tmp_path / "smoke" / "synthetic"
    study = [f"gcn_study_beta{b}_seed{s}" for b in ("0.1", "0") for s in (0, 1)]
    ids = {
        name: set(pd.read_csv(out / f"predictions_{name}.csv")["sample_id"])
        for name in ["gcn", "llm", "none", "random", *study]
    }
    assert ids["gcn"] == ids["llm"] and len(ids["gcn"]) == profile.data.test_cap
    assert all(ids["none"] == ids["random"] == ids[name] for name in study)
    assert len(ids["none"]) == profile.evaluation.reduced_cap and ids["none"] < ids["gcn"]
    # every run of the study completed the same (shorter) schedule; only β and seed differ
    runs = (
        table[table["variant"].str.startswith("study_")].groupby("variant")[["train_steps", "beta"]].first()
    )
    assert (
        runs["train_steps"] == -(-24 // profile.train.batch_size)
    ).all()  # ceil: the last batch is partial
    assert sorted(runs["beta"].tolist()) == [0.0, 0.0, 0.1, 0.1]


def test_the_beta_study_records_a_learning_curve_and_each_arms_mean_learning_rate(tmp_path):
    profile = small_smoke()
    run_recommender(profile, results_root=tmp_path, progress=False)
    out = tmp_path / "smoke" / "synthetic"
    curve = pd.read_csv(out / "learning_curve.csv")
    assert list(curve.columns) == [
        "variant",
        "beta",
        "seed",
        "step",
        "prompts_seen",
        "head_layer",
        "auc",
        "n",
    ]
    # 2 steps a run, 2 curve points: the snapshot after step 1, then the final model
    one = curve[curve["variant"] == "study_beta0.1_seed1"]
    assert sorted(set(one["step"])) == [1, 2] and sorted(set(one["prompts_seen"])) == [16, 24]
    assert set(one["head_layer"]) == {2, 4, 6} and (one["n"] == 16).all() and one["auc"].between(0, 1).all()
    assert set(curve["variant"]) == {f"study_beta{b}_seed{s}" for b in ("0.1", "0") for s in (0, 1)}
    # the snapshot's curve points are the weights after step 1, not the final model's: over every
    # run and head (16 samples make one AUC coarse enough to tie by chance), some of them differ
    by_step = curve.pivot_table(index=["variant", "head_layer"], columns="step", values="auc")
    assert (by_step[1] != by_step[2]).any()
    runs = pd.read_csv(out / "beta_runs.csv").set_index("variant")
    assert runs.loc["study_beta0_seed0", "mean_lr_factor"] == pytest.approx(1.0)
    # three head groups of equal size get exp(-0.1 d), d = 0, 1, 2: a mean below 1 for β = 0.1
    assert 0.8 < runs.loc["study_beta0.1_seed0", "mean_lr_factor"] < 1.0
    assert (runs["prompts_seen"] == 24).all()


def test_mixed_contexts_are_balanced_and_seeded():
    ctx = mixed_contexts(10, ("none", "gcn"), seed=0)
    assert ctx.count("none") == 5 and ctx == mixed_contexts(10, ("none", "gcn"), seed=0)


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown profile 'laptop'.*smoke"):
        get_profile("laptop")
    assert set(PROFILES) == {"smoke", "cpu", "gpu"}


def test_training_samples_get_gcn_neighbours_from_a_retriever_that_never_saw_their_own_interaction(tmp_path):
    from ragrec.experiments.recommender.prepare import fit_retrievers, prepare_data, training_retrievers

    prepared = prepare_data(small_smoke())
    plain = fit_retrievers(prepared, None, ("gcn",), results_root=tmp_path)
    folded = training_retrievers(prepared, plain, results_root=tmp_path)["gcn"]
    frame = prepared.train.frame
    pairs = set(zip(frame["user"], frame["item"], strict=True))
    assert len(folded.folds) == prepared.profile.train_folds
    for f, retriever in enumerate(folded.folds):
        seen = set(zip(retriever.sequences.users, retriever.sequences.items, strict=True))
        samples = zip(frame["user"], frame["item"], folded.fold_of, strict=True)
        mine = {(u, i) for u, i, fold in samples if fold == f}
        assert not mine & seen, "a fold's retriever was fitted on its own samples' interactions"
        assert (pairs - mine) <= seen, "the other folds' interactions stay in the graph"
    hoods = folded.neighbours(prepared.train, 3)
    assert hoods.shape == (len(prepared.train), 3)


def test_the_cf_variant_scores_the_main_models_samples_and_reloads_with_its_vectors(tmp_path):
    from ragrec.experiments.recommender.cf_model import load_cf_model
    from ragrec.experiments.recommender.prepare import load_model, prepare_data

    profile = dataclasses.replace(small_smoke(), beta_study=None)
    table = run_recommender(profile, results_root=tmp_path, progress=False)
    out = tmp_path / "smoke" / "synthetic"
    main, cf = (pd.read_csv(out / name) for name in ("predictions_gcn.csv", "predictions_gcn_cf.csv"))
    assert main["sample_id"].tolist() == cf["sample_id"].tolist(), (
        "cf and main are paired on the same samples"
    )
    assert not np.allclose(main["p_head_6"], cf["p_head_6"]), "the slots change the predictions"
    assert len(pd.read_csv(out / "predictions_none_cf.csv")) == profile.evaluation.reduced_cap
    assert (out / "predictions_valid_gcn_cf.csv").exists()
    choice = pd.read_csv(out / "cf_choice.csv")
    assert set(choice["source"]) == {"lightgcn", "like_mf"} and choice["chosen"].sum() == 1
    assert set(table[table["variant"] == "cf"]["context"]) == set(profile.cf.contexts)
    # the reloaded variant reproduces its saved predictions (its vectors come from the checkpoint)
    prepared = prepare_data(profile)
    reloaded = load_cf_model(prepared, load_model(profile, prepared.dataset), results_root=tmp_path)
    from ragrec.experiments.recommender.cf_model import cf_builder
    from ragrec.experiments.recommender.prepare import fit_retrievers
    from ragrec.experiments.recommender.run import Run
    from ragrec.experiments.recommender.scoring import score_context, to_scoring
    from ragrec.model.inference import scoring_dtype

    reloaded = to_scoring(reloaded, scoring_dtype(profile.evaluation.dtype))  # as the recommender scored it
    retrievers = fit_retrievers(prepared, reloaded.backbone, ("gcn",), results_root=tmp_path)
    run = Run(prepared, tmp_path, progress=False, retrievers=retrievers)
    builder = cf_builder(prepared, reloaded.backbone, retrievers)
    per_head, _ = score_context(run, reloaded, builder, prepared.test, "gcn")
    np.testing.assert_array_equal(per_head[:, -1], cf["p_head_6"])


def test_training_samples_query_the_llm_retriever_without_their_own_target(tmp_path, monkeypatch):
    import ragrec.retrieval.llm as llm_module
    from ragrec.experiments.recommender.prepare import fit_retrievers, load_model, prepare_data
    from ragrec.retrieval.llm import LeaveTargetOut

    prepared = prepare_data(small_smoke())
    llm = fit_retrievers(
        prepared, load_model(prepared.profile, prepared.dataset), ("llm",), results_root=tmp_path
    )["llm"]
    embedded = []
    real = llm_module.embed_texts
    monkeypatch.setattr(
        llm_module,
        "embed_texts",
        lambda backbone, texts, **kw: embedded.extend(texts) or real(backbone, texts, **kw),
    )
    hoods = LeaveTargetOut(llm).neighbours(prepared.train, 3)
    frame = prepared.train.frame
    affected = [
        (u, i)
        for u, i in zip(frame["user"], frame["item"], strict=True)
        if i in llm.sequences.items[llm.sequences.window(int(u), None, llm.history_items)]
    ]
    assert affected and len(embedded) == len(affected), (
        "only samples whose target is in the query text re-embed"
    )
    embedded_once = list(embedded)
    assert hoods.shape == (len(frame), 3) and (hoods != frame["user"].to_numpy()[:, None]).all()
    # asked again for samples it already queried (the information table does): no new LLM forward
    retriever = LeaveTargetOut(llm)
    first = retriever.neighbours(prepared.train, 3)
    count = len(embedded)
    np.testing.assert_array_equal(
        retriever.neighbours(prepared.train.subset(frame.index[::2]), 3), first[::2]
    )
    assert len(embedded) == count
    # each query text lacks its own target
    for (user, item), text in zip(affected, embedded_once, strict=True):
        assert str(prepared.dataset.items.at[int(item), "title"]) not in text
        assert text != llm.user_text(user)
