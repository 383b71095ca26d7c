"""How interactions read as text: the one place that turns items and ratings into words.

Used by the prompt builder (the target user's and neighbours' histories) and by the LLM
retriever (a user's history text to embed), so both see users the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from ragrec.data.base import Dataset


def item_line(dataset: Dataset, item: int, rating: float | None = None) -> str:
    """``"Toy Story (year: 1995; genres: Animation, Comedy)"`` plus ``", rated 4/5"`` when a
    rating is given (scale taken from the dataset: 10 for Book-Crossing, else 5)."""
    text = dataset.item_text(int(item))
    if rating is None:
        return text
    scale = 10 if dataset.name == "bookcrossing" else 5
    return f"{text}, rated {rating:g}/{scale}"


def history_text(dataset: Dataset, items: Sequence[int], ratings: Sequence[float]) -> str:
    """A user's history, oldest first, one numbered line per item with its rating."""
    if len(items) == 0:
        return "(no earlier interactions)"
    return "\n".join(f"{i + 1}. {item_line(dataset, it, r)}" for i, (it, r) in enumerate(zip(items, ratings)))
