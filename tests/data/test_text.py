"""Items and histories read the same way wherever they are shown to the LLM."""

from ragrec.data import load_dataset
from ragrec.data.text import history_text, item_line


def test_history_text_numbers_items_oldest_first_with_ratings():
    ds = load_dataset("synthetic", n_users=5, n_items=20, min_per_user=3, max_per_user=4)
    text = history_text(ds, [3, 1], [4.0, 2.0])
    lines = text.splitlines()
    assert lines[0].startswith(f"1. {ds.items.loc[3, 'title']}") and lines[0].endswith("rated 4/5")
    assert lines[1].startswith(f"2. {ds.items.loc[1, 'title']}")
    assert "genres:" in item_line(ds, 3)
    assert history_text(ds, [], []) == "(no earlier interactions)"
