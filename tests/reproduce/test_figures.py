"""Figures: the chosen τ is read from the tables, never assumed, and each figure draws what its
tables hold (or says what is missing)."""

from __future__ import annotations

import pandas as pd
import pytest

from ragrec.reproduce import figures


def _sweep(chosen_tau: float | None = 0.1, **extra) -> pd.DataFrame:
    rows = []
    for form in ("difference", "ratio"):
        for tau, share in ((0.0, 1.0), (0.1, 0.5), (0.2, 0.35)):
            rows.append(
                {
                    "form": form,
                    "first_head": "wait",
                    "tau": tau,
                    "auc": 0.74 - 0.01 * tau,
                    "auc_ci_low": 0.69,
                    "auc_ci_high": 0.79,
                    "auc_full": 0.74,
                    "layer_share": share,
                    "compute_bound_speedup": 1 / share,
                    "exit_share_5": 0.0,
                    "exit_share_10": 0.4,
                    "exit_share_30": 0.6,
                    "operating_point": form == "difference" and tau == chosen_tau,
                    **extra,
                }
            )
    return pd.DataFrame(rows)


EXITS = pd.DataFrame(
    [
        {
            "method": "full",
            "form": "none",
            "tau": None,
            "role": "full_depth",
            "rps": 3.7,
            "speedup_vs_full": 1.0,
            "compute_bound_speedup": 1.0,
        },
        {
            "method": "engine_full",
            "form": "none",
            "tau": None,
            "role": "engine_full_depth",
            "rps": 4.4,
            "speedup_vs_full": 1.19,
            "compute_bound_speedup": 1.0,
        },
        {
            "method": "exit",
            "form": "ratio",
            "tau": 0.2,
            "role": "operating_point",
            "rps": 6.8,
            "speedup_vs_full": 1.86,
            "compute_bound_speedup": 2.05,
        },
    ]
)


def test_the_chosen_point_is_the_row_the_sweep_flags():
    chosen = figures.chosen_point(_sweep(0.1), EXITS)
    assert (chosen["form"], chosen["tau"]) == ("difference", 0.1)


def test_the_chosen_point_falls_back_to_the_engines_operating_point():
    sweep = _sweep(None).drop(columns="operating_point")
    chosen = figures.chosen_point(sweep, EXITS)
    assert (chosen["form"], chosen["tau"]) == ("ratio", 0.2)
    assert figures.chosen_point(sweep, None) is None


def test_the_flag_survives_a_csv_round_trip(tmp_path):
    _sweep(0.2).to_csv(tmp_path / "sweep.csv", index=False)
    chosen = figures.chosen_point(pd.read_csv(tmp_path / "sweep.csv"))
    assert (chosen["form"], chosen["tau"]) == ("difference", 0.2)


def test_a_sweep_with_a_split_column_is_read_on_its_test_rows():
    sweep = pd.concat([_sweep(0.2, split="valid"), _sweep(0.1, split="test")], ignore_index=True)
    chosen = figures.chosen_point(sweep)
    assert (chosen["tau"], chosen["split"]) == (0.1, "test")
    assert figures.chosen_where(sweep) == {
        "form": "difference",
        "tau": 0.1,
        "first_head": "wait",
        "split": "test",
    }


def _texts(fig) -> list[str]:
    ax = fig.axes[0]
    return (
        [
            ax.get_title(),
            *(t.get_text() for t in ax.texts),
            *(t.get_text() for t in ax.get_legend().get_texts()),
        ]
        if ax.get_legend()
        else [ax.get_title(), *(t.get_text() for t in ax.texts)]
    )


def test_the_sweep_curve_marks_the_chosen_tau_and_full_depth():
    labels = _texts(figures.sweep_curve(_sweep(0.1), EXITS))
    assert "chosen: difference τ = 0.1" in labels and "full depth" in labels


def test_the_exit_histogram_has_a_bar_per_head_at_the_chosen_tau():
    fig = figures.exit_histogram(_sweep(0.1), EXITS)
    bars = fig.axes[0].patches
    assert [round(b.get_height(), 3) for b in bars] == [0.0, 0.4, 0.6]
    assert "difference τ = 0.1" in fig.axes[0].get_title()


def test_the_headline_puts_each_timed_setting_at_its_measured_rate():
    fig = figures.headline(_sweep(0.1), EXITS)
    labels = _texts(fig)
    assert "full depth (measured)" in labels
    assert "full depth, early-exit engine never exiting (measured)" in labels, "early exit's own reference"
    assert "ratio τ = 0.2, measured" in labels, "the engine's setting, with the sweep's AUC for its rule"
    ax = fig.axes[0]
    xs = {round(float(x), 2) for line in ax.lines for x in line.get_xdata()}
    xs |= {round(float(x), 2) for coll in ax.collections for x, _ in coll.get_offsets()}
    assert {3.7, 4.4, 6.8} <= xs


@pytest.mark.parametrize(("sweep", "exits"), [(None, EXITS), (_sweep(), None)], ids=["no sweep", "no engine"])
def test_the_headline_says_what_is_missing(sweep, exits):
    assert "no timed full-depth run" in " ".join(_texts(figures.headline(sweep, exits)))


def test_the_per_head_figure_draws_every_context_of_the_main_variant():
    heads = pd.DataFrame(
        [
            {
                "context": c,
                "variant": v,
                "head_layer": layer,
                "auc": 0.7,
                "auc_ci_low": 0.6,
                "auc_ci_high": 0.8,
            }
            for c in ("gcn", "none", "llm")
            for v in ("main", "beta0")
            for layer in (5, 10)
        ]
    )
    labels = _texts(figures.per_head_auc(heads))
    assert [x for x in labels if x in ("no similar users", "GCN-retrieved", "LLM-retrieved")] == [
        "no similar users",
        "GCN-retrieved",
        "LLM-retrieved",
    ]


def _with_baselines(sweep: pd.DataFrame) -> pd.DataFrame:
    """The sweep plus a static exit at three heads and a confidence rule over two margins."""
    base = sweep.iloc[0].to_dict() | {"operating_point": False}
    rows = [
        base | {"form": "static", "first_head": "static", "tau": t, "layer_share": t / 30}
        for t in (10.0, 20.0, 30.0)
    ]
    rows += [
        base | {"form": "confidence", "first_head": "confident", "tau": t, "layer_share": s}
        for t, s in ((0.5, 1.0), (0.2, 0.6))
    ]
    rows = [r | {"compute_bound_speedup": 1 / r["layer_share"]} for r in rows]
    return pd.concat([sweep, pd.DataFrame(rows)], ignore_index=True)


def test_the_headline_draws_the_static_exits_and_the_confidence_rule_beside_the_papers_rule():
    fig = figures.headline(_with_baselines(_sweep(0.1)), EXITS)
    labels = _texts(fig)
    for family in ("difference rule", "ratio rule", "static exit (each head)", "confidence rule"):
        assert f"{family}, projected rate" in labels
    static = next(line for line in fig.axes[0].lines if line.get_label().startswith("static exit"))
    assert static.get_linestyle() == "None" and len(static.get_xdata()) == 3  # one marker per head
    efficiency = 1.86 / 2.05  # the operating point's measured over its compute bound
    expected = sorted(3.7 * 30 / t * efficiency for t in (10.0, 20.0, 30.0))
    assert sorted(static.get_xdata()) == pytest.approx(expected)


def test_the_sweep_curve_shows_the_static_exit_as_points():
    labels = _texts(figures.sweep_curve(_with_baselines(_sweep(0.1)), EXITS))
    assert "static exit (each head)" in labels and "confidence rule" in labels


def test_a_static_setting_is_named_by_its_layer():
    assert figures.setting_label("static", 15.0) == "static exit at layer 15"
    assert figures.setting_label("ratio", 0.2) == "ratio τ = 0.2"
