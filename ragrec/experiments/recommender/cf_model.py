"""The ``cf`` variant (beyond the paper): which collaborative vectors feed the prompt's soft tokens.

Two candidates, both fitted on the training interactions only: the retriever's LightGCN (BPR on
every interaction: who watches what) and a matrix factorisation on the like labels
(:func:`ragrec.retrieval.collaborative.fit_like_mf`: who likes what, CoLLM's MF variant). The
choice is made on *validation* samples: a logistic regression reads each candidate's user
vector, item vector and their elementwise product, is fitted on the training samples and scored
on the validation samples; the candidate with the higher validation AUC feeds the tokens.
``cf_choice.csv`` records both AUCs, so the choice can be redone.

Then CoLLM's second step on the trained main model (:func:`train_cf_model`): its LoRA and heads
stay frozen and only the projection learns; the variant is scored on the main model's test
samples, so ``cf`` against ``main`` is a paired comparison of the tokens alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors import SafetensorError, safe_open

from ragrec.data import Samples
from ragrec.errors import ModelError
from ragrec.experiments.recommender.contexts import encode_contexts, mixed_contexts
from ragrec.experiments.recommender.prepare import Prepared, checkpoint_dir
from ragrec.experiments.recommender.run import Run
from ragrec.experiments.recommender.scoring import (
    TrainedModel,
    capped_rows,
    cf_ids_of,
    evaluate_contexts,
    load_trained_model,
    save_validation_predictions,
)
from ragrec.llm.backbone import Backbone
from ragrec.metrics import auc
from ragrec.model.cf_tokens import CFTokens, cf_marker
from ragrec.model.checkpoints import load_trained
from ragrec.model.heads import ExitHeads
from ragrec.model.prompts import PromptBuilder
from ragrec.model.train import train_multihead
from ragrec.result_files import CF_CHOICE, predictions
from ragrec.results import write_csv
from ragrec.retrieval.base import Retriever
from ragrec.retrieval.collaborative import CFEmbeddings, LikeMFConfig, fit_like_mf
from ragrec.retrieval.gcn import GCNRetriever


def lightgcn_embeddings(retriever: GCNRetriever) -> CFEmbeddings:
    """The retriever's LightGCN read-out as collaborative vectors (ids without a training
    interaction are unknown)."""
    result = retriever.result
    seqs = retriever.sequences
    known_users = np.zeros(retriever.n_users, dtype=bool)
    known_users[seqs.users] = True
    known_items = np.zeros(result.item_embeddings.shape[0], dtype=bool)
    known_items[seqs.items] = True
    return CFEmbeddings(
        np.asarray(result.user_embeddings, np.float32),
        np.asarray(result.item_embeddings, np.float32),
        known_users,
        known_items,
        source="lightgcn",
    )


def probe_features(embeddings: CFEmbeddings, samples: Samples) -> np.ndarray:
    """``[n, 3d]``: the user vector, the item vector and their elementwise product per sample."""
    u = embeddings.users[samples.frame["user"].to_numpy(np.int64)]
    i = embeddings.items[samples.frame["item"].to_numpy(np.int64)]
    return np.concatenate([u, i, u * i], axis=1)


def validation_probe_auc(embeddings: CFEmbeddings, train: Samples, valid: Samples, seed: int = 0) -> float:
    """Validation AUC of a logistic regression on :func:`probe_features`, fitted on ``train``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(probe_features(embeddings, train))
    model = LogisticRegression(max_iter=2000, random_state=seed)
    model.fit(scaler.transform(probe_features(embeddings, train)), train.frame["label"].to_numpy(int))
    p = model.predict_proba(scaler.transform(probe_features(embeddings, valid)))[:, 1]
    return auc(valid.frame["label"].to_numpy(), p)


def choose_cf_embeddings(
    train_interactions: pd.DataFrame,
    gcn: GCNRetriever,
    n_items: int,
    train: Samples,
    valid: Samples,
    *,
    config: LikeMFConfig | None = None,
) -> tuple[CFEmbeddings, pd.DataFrame]:
    """Fit the like-MF, probe both candidates on validation, return the better one and the
    ``cf_choice.csv`` table (``source, valid_probe_auc, chosen``)."""
    config = config or LikeMFConfig()
    candidates = {
        "lightgcn": lightgcn_embeddings(gcn),
        "like_mf": fit_like_mf(train_interactions, gcn.n_users, n_items, config),
    }
    scores = {
        name: validation_probe_auc(emb, train, valid, seed=config.seed) for name, emb in candidates.items()
    }
    best = max(scores, key=scores.get)
    table = pd.DataFrame(
        {
            "source": list(scores),
            "valid_probe_auc": list(scores.values()),
            "chosen": [name == best for name in scores],
        }
    )
    return candidates[best], table


# --------------------------------------------------------------------------------------------
# the variant: train the projection on the frozen main model, score it like the main model


def cf_model_dir(profile, results_root=None) -> Path:
    return checkpoint_dir(profile, results_root) / f"model_beta{profile.train.beta:g}_cf"


def cf_builder(prepared: Prepared, backbone: Backbone, retrievers: dict[str, Retriever]) -> PromptBuilder:
    """The profile's prompts with the two collaborative slots."""
    p = prepared.profile
    return PromptBuilder(
        prepared.dataset, backbone, retrievers["gcn"].sequences, replace(p.prompt, cf_tokens=True)
    )


def cf_heads(main: TrainedModel, embeddings: CFEmbeddings, expansion: int, seed: int) -> ExitHeads:
    """A copy of the main model's heads on the same backbone, with collaborative tokens attached."""
    heads = ExitHeads(main.backbone, main.heads.head_layers, readout=main.heads.has_readouts)
    heads.load_state_dict(main.heads.state_dict())
    marker = cf_marker(main.backbone.tokenizer)[1]
    heads.attach_cf(CFTokens(embeddings, heads.hidden_size, marker, expansion=expansion, seed=seed))
    return heads


def train_cf_model(run: Run, main: TrainedModel, embeddings: CFEmbeddings) -> TrainedModel:
    """CoLLM's second step on the main model: LoRA and the heads frozen, only the projection
    trains, on the main run's training prompts (or the profile's subset) rebuilt with the slots."""
    prepared, p, s = run.prepared, run.profile, run.profile.cf
    heads = cf_heads(main, embeddings, s.expansion, p.seed)
    for param in [*main.backbone.model.parameters(), *heads.norms.parameters(), *heads.readouts.parameters()]:
        param.requires_grad_(False)
    builder = cf_builder(prepared, main.backbone, run.retrievers)
    contexts = mixed_contexts(len(prepared.train), p.contexts, p.seed)
    rows = capped_rows(prepared, s.train_cap)
    train = prepared.train.subset(prepared.train.frame.index[rows])
    prompts = encode_contexts(builder, run.training_retrievers, train, [contexts[r] for r in rows])
    valid = None
    if p.evaluation.validate_while_training:
        gcn_context = ["gcn"] * len(prepared.valid)
        valid_prompts = encode_contexts(builder, run.retrievers, prepared.valid, gcn_context)
        valid = (valid_prompts, prepared.valid.frame["label"].to_numpy())
    config = replace(p.train, lr=s.lr, epochs=s.epochs)
    result = train_multihead(
        main.backbone,
        heads,
        prompts,
        train.frame["label"].to_numpy(),
        config,
        cf_model_dir(p, run.results_root),
        valid=valid,
        progress=run.progress,
        cf_ids=cf_ids_of(train),
        valid_cf_ids=cf_ids_of(prepared.valid),
    )
    return TrainedModel(main.backbone, heads, result, config.beta)


def load_cf_model(prepared: Prepared, backbone: Backbone, *, results_root=None) -> TrainedModel:
    """The finished ``cf`` variant, reloaded on a fresh ``backbone`` (never trained here): the
    collaborative vectors come back from its checkpoint. ModelError if absent."""
    p = prepared.profile
    directory = cf_model_dir(p, results_root)
    main = load_trained_model(prepared, backbone, results_root=results_root)
    path = directory / "final" / "heads.safetensors"
    if not path.is_file():
        raise ModelError(f"no trained cf variant at {directory}; run the recommender step first")
    try:
        with safe_open(str(path), "pt") as saved:
            users, items = saved.get_slice("cf.users").get_shape(), saved.get_slice("cf.items").get_shape()
    except (SafetensorError, OSError) as exc:
        raise ModelError(
            f"cf checkpoint {path} is unreadable ({str(exc).splitlines()[0]}): delete {directory}/ and "
            "rerun the recommender notebook (make notebook NB=recommender)"
        ) from None
    placeholder = CFEmbeddings(
        np.zeros(users, np.float32),
        np.zeros(items, np.float32),
        np.ones(users[0], bool),
        np.ones(items[0], bool),
        source="checkpoint",
    )
    heads = cf_heads(main, placeholder, p.cf.expansion, p.seed)
    result = load_trained(directory, main.backbone, heads, "final")
    heads.eval()
    return TrainedModel(main.backbone, heads, result, main.beta)


def fit_cf_variant(run: Run, main: TrainedModel) -> TrainedModel:
    """Choose the vectors on validation (``cf_choice.csv``) and train the projection on the main
    model (:func:`train_cf_model`), before the main model is merged for scoring."""
    prepared, p = run.prepared, run.profile
    embeddings, choice = choose_cf_embeddings(
        prepared.split.train,
        run.retrievers["gcn"],
        prepared.dataset.n_items,
        prepared.samples.part("train"),
        prepared.valid,
        config=LikeMFConfig(seed=p.seed),
    )
    write_csv(choice, run.out_dir / CF_CHOICE)
    return train_cf_model(run, main, embeddings)


def score_cf_variant(run: Run, model: TrainedModel) -> tuple[list[pd.DataFrame], list[str]]:
    """Save the variant's validation predictions and score it under ``profile.cf.contexts`` on
    the main model's test samples (variant ``cf``). Returns its ``heads.csv`` rows and files."""
    p = run.profile
    builder = cf_builder(run.prepared, model.backbone, run.retrievers)
    names = save_validation_predictions(run, model, builder, variant="cf")
    table = evaluate_contexts(run, model, builder, p.cf.contexts, variant="cf")
    return [table], [CF_CHOICE, *names] + [predictions(c, "cf") for c in p.cf.contexts]
