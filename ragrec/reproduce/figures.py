"""Figures that show the effect, drawn from results tables (never from a model).

Each function takes the tables as read from their CSV files and returns a matplotlib
:class:`~matplotlib.figure.Figure` made without pyplot (no global state; a notebook shows it with
:meth:`ragrec.reproduce.notebook.NotebookContext.show_figure`):

- :func:`per_head_auc`: test AUC of every exit head under every prompt context, with intervals;
- :func:`sweep_curve`: AUC against the share of layer compute over the threshold sweep, the
  chosen τ and full depth marked;
- :func:`exit_histogram`: where test samples exit at the chosen τ;
- :func:`headline`: AUC against measured requests per second, the landing page's figure; every
  candidate family (the paper's rule, the static exit at each head, the confidence rule) at the
  rate its layer compute projects.

Which τ was chosen is read from the tables (:func:`chosen_point`), never assumed.
"""

from __future__ import annotations

import itertools

import pandas as pd
from matplotlib.figure import Figure

from ragrec.model.criteria import STATIC
from ragrec.reproduce.formatting import is_missing
from ragrec.reproduce.tables import CONTEXT_LABELS

WIDTH = 6.8  # inches; at the 120 dpi the PNGs are saved with, narrower than the book's column
CHOSEN_STYLE = {"s": 130, "facecolors": "none", "edgecolors": "black", "linewidths": 1.6, "zorder": 5}
FULL_STYLE = {"marker": "*", "s": 160, "color": "black", "zorder": 5}


def _figure(height: float = 3.6) -> tuple[Figure, object]:
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    return fig, fig.add_subplot()


def _yerr(rows: pd.DataFrame, value: str = "auc") -> list[pd.Series] | None:
    if f"{value}_ci_low" not in rows or f"{value}_ci_high" not in rows:
        return None
    return [rows[value] - rows[f"{value}_ci_low"], rows[f"{value}_ci_high"] - rows[value]]


def _flag(column: pd.Series) -> pd.Series:
    """A boolean column as read back from CSV (True/False, or their strings)."""
    return column.astype(str).str.lower().isin({"true", "1"})


def main_variant(frame: pd.DataFrame) -> pd.DataFrame:
    """The main model's rows of a table that also holds the ``cf`` variant's (all rows of an
    older table without a ``variant`` column)."""
    return frame[frame["variant"] == "main"] if "variant" in frame.columns else frame


def scored_on_test(sweep: pd.DataFrame) -> pd.DataFrame:
    """The main model's sweep rows scored on the test samples (all rows when the sweep has no
    ``split`` column)."""
    sweep = main_variant(sweep)
    return sweep[sweep["split"] == "test"] if "split" in sweep.columns else sweep


def chosen_where(sweep: pd.DataFrame | None, exits: pd.DataFrame | None = None) -> dict | None:
    """The row filter of :func:`chosen_point` for ``threshold_sweep.csv`` (to glue its cells);
    None when no τ was chosen."""
    chosen = chosen_point(sweep, exits) if sweep is not None else None
    if chosen is None:
        return None
    where = {"form": chosen["form"], "tau": float(chosen["tau"])}
    where.update(
        {column: chosen[column] for column in ("first_head", "split", "variant") if column in chosen.index}
    )
    return where


def chosen_point(sweep: pd.DataFrame, exits: pd.DataFrame | None = None) -> pd.Series | None:
    """The sweep row of the chosen exit rule and τ: the row flagged ``operating_point``, else the
    (form, τ) of the ``operating_point`` row of ``early_exit.csv``; None when neither says."""
    rows = scored_on_test(sweep)
    if "operating_point" in rows.columns and _flag(rows["operating_point"]).any():
        return rows[_flag(rows["operating_point"])].iloc[0]
    if exits is not None and "role" in exits.columns:
        exits = main_variant(exits)
        op = exits[(exits["role"] == "operating_point") & (exits["method"] == "exit")]
        if len(op):
            match = rows[(rows["form"] == op["form"].iloc[0]) & (rows["tau"] == op["tau"].iloc[0])]
            return match.iloc[0] if len(match) else None
    return None


def per_head_auc(heads: pd.DataFrame, *, variant: str = "main", title: str = "") -> Figure:
    """Test AUC [95% CI] of every exit head, one line per prompt context."""
    rows = heads[heads["variant"] == variant] if "variant" in heads.columns else heads
    layers = sorted(rows["head_layer"].unique())
    contexts = [c for c in CONTEXT_LABELS if c in set(rows["context"])] + sorted(
        set(rows["context"]) - set(CONTEXT_LABELS)
    )
    step = min((b - a for a, b in itertools.pairwise(layers)), default=1)
    fig, ax = _figure()
    for i, context in enumerate(contexts):
        one = rows[rows["context"] == context].sort_values("head_layer")
        shift = (
            (i - (len(contexts) - 1) / 2) * 0.08 * step
        )  # side by side, so intervals do not hide each other
        ax.errorbar(
            one["head_layer"] + shift,
            one["auc"],
            yerr=_yerr(one),
            marker="o",
            ms=4,
            capsize=3,
            label=CONTEXT_LABELS.get(context, context),
        )
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="exit head (decoder layer)", ylabel="test AUC (95% CI)", xticks=layers, title=title)
    ax.legend(title="similar users in the prompt", fontsize=8, title_fontsize=8)
    return fig


def sweep_curve(sweep: pd.DataFrame, exits: pd.DataFrame | None = None, *, title: str = "") -> Figure:
    """AUC against the share of layer compute used, over τ, per exit rule; the chosen τ circled
    and full depth starred."""
    rows, chosen = scored_on_test(sweep), chosen_point(sweep, exits)
    fig, ax = _figure()
    for form, one in rows.groupby("form", sort=False):
        one = one.sort_values("layer_share")
        line = ax.plot(one["layer_share"], one["auc"], **_family_style(str(form)))[0]
        if "auc_ci_low" in one and (chosen is None or form == chosen["form"]):  # one band stays readable
            ax.fill_between(
                one["layer_share"], one["auc_ci_low"], one["auc_ci_high"], color=line.get_color(), alpha=0.12
            )
    if "auc_full" in rows and len(rows):
        ax.scatter([1.0], [rows["auc_full"].iloc[0]], label="full depth", **FULL_STYLE)
    if chosen is not None:
        ax.scatter(
            [chosen["layer_share"]],
            [chosen["auc"]],
            label=f"chosen: {setting_label(chosen['form'], chosen['tau'])}",
            **CHOSEN_STYLE,
        )
    ax.set(xlabel="share of layer compute used", ylabel="test AUC (band: 95% CI)", title=title)
    ax.legend(fontsize=8)
    return fig


def setting_label(form: str, tau: float) -> str:
    """An exit setting in words: ``difference τ = 0.05``, or ``static exit at layer 15``."""
    return f"static exit at layer {float(tau):g}" if form == STATIC else f"{form} τ = {float(tau):g}"


def _family_style(form: str) -> dict:
    """How a family's points are drawn: a static exit as one marker per head (no curve joins
    separate models), every rule as a line over its grid."""
    if form == STATIC:
        return {"marker": "s", "ms": 5, "ls": "", "label": "static exit (each head)"}
    return {"marker": ".", "label": f"{form} rule"}


def exit_histogram(sweep: pd.DataFrame, exits: pd.DataFrame | None = None, *, title: str = "") -> Figure:
    """Share of test samples exiting at each head under the chosen rule and τ."""
    chosen = chosen_point(sweep, exits)
    fig, ax = _figure(3.0)
    shares = (
        {}
        if chosen is None
        else {c.removeprefix("exit_share_"): chosen[c] for c in chosen.index if c.startswith("exit_share_")}
    )
    if shares:
        ax.bar(list(shares), list(shares.values()), color="tab:purple")
        title = title or f"where test samples exit ({setting_label(chosen['form'], chosen['tau'])})"
    else:
        ax.text(0.5, 0.5, "no chosen τ in the results", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="exit head (decoder layer)", ylabel="share of test samples", title=title)
    return fig


def _engine_rate(exits: pd.DataFrame, method: str, role: str | None = None) -> pd.Series | None:
    exits = main_variant(exits)
    rows = exits[exits["method"] == method]
    if role is not None and "role" in rows.columns:
        rows = rows[rows["role"] == role]
    return rows.iloc[0] if len(rows) else None


def headline(sweep: pd.DataFrame | None, exits: pd.DataFrame | None, *, title: str = "") -> Figure:
    """Test AUC against requests per second: each timed engine setting at its measured rate with
    the sweep's AUC on all test samples (the timed requests are too few to rank AUCs); the sweep
    as a dashed line at the rate its layer compute projects with the measured efficiency. None
    for a table not produced draws a figure that says so."""
    rows = scored_on_test(sweep) if sweep is not None else pd.DataFrame()
    full = _engine_rate(exits, "full") if exits is not None else None
    fig, ax = _figure(3.8)
    if exits is None or full is None or not len(rows):
        ax.text(
            0.5,
            0.5,
            "no timed full-depth run in the results",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return fig
    chosen = chosen_point(sweep, exits)
    _projected_sweep(ax, rows, exits, full, chosen)
    _full_depth_points(ax, rows, exits, full)
    _timed_points(ax, rows, exits, chosen)
    ax.set(
        xlabel="requests per second (measured, same machine and threads)",
        ylabel="test AUC (95% CI)",
        title=title,
    )
    ax.legend(fontsize=8)
    return fig


def _projected_sweep(ax, rows: pd.DataFrame, exits: pd.DataFrame, full: pd.Series, chosen) -> None:
    """Every family's sweep at the rate its layer compute projects, scaled by the measured
    efficiency of the operating point: dashed lines for the rules, squares for the static exit."""
    op = _engine_rate(exits, "exit", "operating_point")
    if chosen is None or op is None or is_missing(op.get("speedup_vs_full")):
        return
    efficiency = op["speedup_vs_full"] / op["compute_bound_speedup"]
    for form, one in rows.groupby("form", sort=False):
        one = one.sort_values("layer_share")
        style = _family_style(str(form))
        style = {**style, "ls": style.get("ls", "--"), "lw": 1, "alpha": 0.8}
        style["label"] = f"{style['label']}, projected rate"
        ax.plot(full["rps"] * one["compute_bound_speedup"] * efficiency, one["auc"], **style)


def _full_depth_points(ax, rows: pd.DataFrame, exits: pd.DataFrame, full: pd.Series) -> None:
    """Full depth at the plain forward's measured rate, and at the engine's never exiting."""
    depth = rows.sort_values("layer_share").iloc[-1]
    ax.errorbar(
        [full["rps"]], [depth["auc"]], yerr=_yerr(rows.loc[[depth.name]]), ls="", capsize=3, color="black"
    )
    ax.scatter([full["rps"]], [depth["auc"]], label="full depth (measured)", **FULL_STYLE)
    engine = _engine_rate(exits, "engine_full")
    if engine is not None:  # the same AUC as full depth; only the forward path differs
        ax.scatter(
            [engine["rps"]],
            [depth["auc"]],
            marker="*",
            s=160,
            facecolors="none",
            edgecolors="black",
            zorder=5,
            label="full depth, early-exit engine never exiting (measured)",
        )


def _timed_points(ax, rows: pd.DataFrame, exits: pd.DataFrame, chosen) -> None:
    """Each timed exit setting at its measured rate with its sweep AUC; the chosen one circled."""
    timed_rows = main_variant(exits)
    for _, timed in timed_rows[timed_rows["method"] == "exit"].iterrows():
        point = rows[(rows["form"] == timed["form"]) & (rows["tau"] == timed["tau"])]
        if not len(point):
            continue
        is_chosen = chosen is not None and (timed["form"], timed["tau"]) == (chosen["form"], chosen["tau"])
        ax.errorbar(
            [timed["rps"]],
            point["auc"],
            yerr=_yerr(point),
            marker="o",
            capsize=3,
            ls="",
            label=setting_label(timed["form"], timed["tau"])
            + (" (chosen)" if is_chosen else "")
            + ", measured",
        )
        if is_chosen:
            ax.scatter([timed["rps"]], point["auc"], **CHOSEN_STYLE)


def training_curve(training: pd.DataFrame, *, window: int = 10, title: str = "multi-head training") -> Figure:
    """Training loss (rolling mean over ``window`` steps) of each run (its variant and β)."""
    fig, ax = _figure(3.0)
    runs = (
        training.groupby(["variant", "beta"], sort=False)
        if "variant" in training.columns
        else training.groupby("beta")
    )
    for key, rows in runs:
        label = f"{key[0]} (β = {key[1]:g})" if isinstance(key, tuple) else f"β = {key:g}"
        ax.plot(rows["step"], rows["loss"].rolling(window, min_periods=1).mean(), label=label)
    ax.set(xlabel="optimizer step", ylabel=f"training loss (rolling mean of {window})", title=title)
    ax.legend()
    return fig
