"""What the landing page shows besides the verdicts: how this build differs from the paper.

The paper's side is what its readable sources report (see the book's *paper* page); this build's
side comes from the profile that ran and the dataset's ``data.csv``, so a ``smoke`` book says
"a tiny random Llama on synthetic data" and a ``cpu`` book "SmolLM2-135M-Instruct on
MovieLens-100K" without a word typed twice.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ragrec.config import Profile, get_profile
from ragrec.reproduce.tables import Column, PeopleTable, is_missing, people_table

PAPER = {
    "model": "Vicuna-7B (32 layers), LoRA",
    "exit heads": "layers 5, 10, 15, 20, 25, 30",
    "data": "BookCrossing, Amazon Beauty, Amazon Video Games",
    "split and samples": "not stated in the sources read here",
    "prompt": "instruction, the user's history, similar users' histories, the target item",
    "hardware": "GPU",
}


def model_description(profile: Profile) -> str:
    """The backbone in words (a local folder by its name only: no machine path)."""
    source = profile.model.source
    if source == "bundled":
        return "SmolLM2-135M-Instruct (30 layers)"
    if source == "tiny":
        return (
            f"a tiny random Llama ({profile.model.tiny_layers} layers, hidden size "
            f"{profile.model.tiny_hidden})"
        )
    return Path(source).name


def _data_description(data: pd.Series) -> str:
    def count(column: str) -> str:
        value = data.get(column)
        return "—" if is_missing(value) else f"{int(value):,}"

    rule = "" if is_missing(data.get("label_rule")) else f"; liked: {data['label_rule']}"
    return (
        f"{data.get('dataset', '—')}: {count('users')} users, {count('items')} items, "
        f"{count('interactions')} ratings{rule}"
    )


def _samples_description(data: pd.Series) -> str:
    split = str(data.get("split_method", "—")).replace("_", "-")
    used = {k: data.get(f"{k}_samples_used") for k in ("train", "valid", "test")}
    counts = ", ".join(f"{'—' if is_missing(v) else f'{int(v):,}'} {k}" for k, v in used.items())
    return f"{split} chronological split; samples used: {counts}"


def differences_table(profile: Profile, data: pd.DataFrame | None) -> PeopleTable:
    """How this build differs from the paper: model, heads, data, split, prompt, hardware, and
    what the ``gpu`` profile would change.

    Args:
        profile: the profile that ran (dataset applied).
        data: the dataset's ``data.csv`` (one row), None when the data step did not run.
    """
    row = data.iloc[0] if data is not None and len(data) else pd.Series(dtype=object)
    gpu = get_profile("gpu", resolve=False)  # the template: what a gpu run would change
    ours = {
        "model": f"{model_description(profile)}, LoRA r = {profile.train.lora.r}",
        "exit heads": "layers " + ", ".join(str(h) for h in profile.model.head_layers),
        "data": _data_description(row),
        "split and samples": _samples_description(row),
        "prompt": f"the same with k = {profile.k} similar users, plus the like shares of the item's "
        "earlier raters, of similar users and of the user's own history (beyond the paper)",
        "hardware": "CPU threads: see the run record" if profile.name != "gpu" else "GPU: see the run record",
    }
    rows = [{"aspect": aspect, "paper": PAPER[aspect], "ours": ours[aspect]} for aspect in PAPER]
    if profile.name != "gpu":
        rows.append(
            {
                "aspect": "a gpu run",
                "paper": "the paper's scale",
                "ours": f"the gpu profile: full splits, k = {gpu.k}, histories of "
                f"{gpu.data.history_len} items, and any local Llama-family folder (e.g. Vicuna-7B) "
                "as the backbone",
            }
        )
    columns = [Column("aspect", ""), Column("paper", "paper"), Column("ours", "this build")]
    return people_table(pd.DataFrame(rows), columns)
