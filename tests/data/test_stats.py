"""The data notebook's tables: sizes, cold start, and every row dropped while loading."""

import json
from pathlib import Path

from ragrec.data import (
    DROP_REASONS,
    METADATA_REASONS,
    build_samples,
    dataset_statistics,
    load_dataset,
    loading_report,
    split_interactions,
)
from tests.data.writers import bx_rows, write_bx

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "data.ipynb"


def test_statistics_table_reports_sizes_and_cold_start(synthetic):
    split = split_interactions(synthetic, "global_time")
    samples = build_samples(split, synthetic.n_users, history_scope="prior")
    stats = dataset_statistics(synthetic, split, samples).iloc[0]
    assert stats["interactions"] == len(synthetic.interactions)
    assert stats["train_samples"] + stats["valid_samples"] + stats["test_samples"] == len(samples)
    assert 0 <= stats["test_cold_start_share"] <= 1
    assert stats["history_scope"] == "prior"


BOOKS = '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher"\n' + "".join(
    f'"{i:04d}";"Book {i}";"A";"1990";"P"\n' for i in range(1, 11)
)


def _bx_with_bad_ratings(tmp_path, n_bad):
    """Two users rating ten books, plus ``n_bad`` non-numeric ratings, one rating of 99, a
    duplicate and two ratings of an unknown book."""
    good = [(u, f"{i:04d}", (u * i) % 11) for u in (11, 12) for i in range(1, 11)]
    bad = [(11, "0001", "n/a")] * n_bad + [
        (12, "0002", 99),
        (12, "0002", 4),
        (11, "9999", 5),
        (12, "9999", 5),
    ]
    write_bx(tmp_path / "bookcrossing", ratings=bx_rows(good + bad), books=BOOKS)
    ds = load_dataset("bookcrossing", data_root=tmp_path)
    split = split_interactions(ds, "per_user")
    return ds, split, build_samples(split, ds.n_users, min_history=1)


def test_data_csv_carries_every_dropped_row_by_reason(tmp_path):
    ds, split, samples = _bx_with_bad_ratings(tmp_path, n_bad=3)
    stats = dataset_statistics(ds, split, samples).iloc[0]
    assert stats["dropped_non_numeric_rating"] == 3 and stats["dropped_rating_out_of_range"] == 1
    assert stats["dropped_unknown_item"] == 2 and stats["dropped_duplicate"] == 1
    assert stats["rows_read"] == stats["interactions"] + stats["dropped_rows"] == 20 + 7
    assert {f"dropped_{r}" for r in DROP_REASONS} | {f"metadata_{r}" for r in METADATA_REASONS} <= set(
        stats.index
    )


def test_the_loading_report_lists_every_reason_with_its_count_and_meaning(tmp_path):
    ds, _, _ = _bx_with_bad_ratings(tmp_path, n_bad=2)
    report = loading_report(ds).set_index("reason")
    assert list(report.index) == [*DROP_REASONS, *METADATA_REASONS]
    assert report.loc["non_numeric_rating", "rows"] == 2 and report.loc["duplicate", "rows"] == 1
    assert report.loc["bad_timestamp", "rows"] == 0  # Book-Crossing has no timestamps to check
    assert report.loc["duplicate", "meaning"] == DROP_REASONS["duplicate"]


def test_the_data_notebook_writes_and_shows_the_loading_counts():
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    code = "\n".join("".join(c["source"]) for c in cells)
    assert "dataset_statistics(prepared.dataset" in code and 'ctx.write(stats, "data.csv")' in code
    shown = [c for c in cells if "loading_report(prepared.dataset)" in "".join(c["source"])]
    assert shown and "remove-cell" not in shown[0]["metadata"].get("tags", []), "the counts must be visible"
