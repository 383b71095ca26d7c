"""RAG prompts for CTR: instruction + the user's history + similar users' histories + the target.

The paper's template is ``[instruction] + [target user's history] + [similar users' histories] +
[target item]`` answered with Yes/No. Every interaction shown is strictly earlier than the
sample and, for other users, a *training* interaction (DESIGN §5). For each neighbour we also
say how they rated the target item when they did so before the sample's time: a collaborative
signal a small LLM can learn to read.

Under a token budget the prompt is shortened in this order, never touching the instruction, the
target item or the question: the oldest items of the furthest neighbour first, then whole
neighbours (furthest first), then the oldest items of the user's own history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ragrec.backbone import Backbone, encode_chat
from ragrec.data import Dataset, Samples, UserSequences
from ragrec.errors import ConfigError
from ragrec.retrieval import neighbour_events
from ragrec.text import item_line

SYSTEM = "You are a recommender system. Answer only Yes or No."


@dataclass(frozen=True)
class PromptConfig:
    """How much context a prompt carries.

    Attributes:
        history_len: items of the target user's own history shown (most recent).
        neighbour_items: items shown per retrieved neighbour (most recent before the sample).
        max_tokens: token budget of the whole rendered prompt (chat template included).
    """

    history_len: int = 10
    neighbour_items: int = 3
    max_tokens: int = 256

    def __post_init__(self) -> None:
        if self.history_len < 1 or self.neighbour_items < 0 or self.max_tokens < 8:
            raise ConfigError(f"invalid prompt configuration {self}")


@dataclass
class _Parts:
    """The pieces of one prompt as lists of lines, so truncation drops whole items."""

    history: list[str]
    neighbours: list[list[str]]  # per neighbour: its item lines
    neighbour_target: list[str | None]  # per neighbour: how it rated the target, if it did
    target: str
    mean_rating: float | None = None
    scale: int = 5
    noun: str = field(default="item")

    def render(self) -> str:
        lines = [f"A user's ratings, oldest first (scale 1-{self.scale}):"]
        lines += [f"- {h}" for h in self.history] or ["- (none)"]
        if self.mean_rating is not None and self.history:
            lines.append(f"Their average rating: {self.mean_rating:.1f}")
        if self.neighbours:
            lines.append("Users with similar taste:")
            for j, (items, rated) in enumerate(zip(self.neighbours, self.neighbour_target)):
                said = f"rated the target {rated}" if rated else "has not rated the target"
                shown = "; ".join(items) if items else "no earlier ratings"
                lines.append(f"User {j + 1} ({said}): {shown}")
        lines.append(f"Target {self.noun}: {self.target}")
        lines.append(f"Will the user like the target {self.noun}? Answer Yes or No.")
        return "\n".join(lines)

    def drop_one(self) -> bool:
        """Remove the least useful remaining unit; False when only the fixed parts remain."""
        for j in range(len(self.neighbours) - 1, -1, -1):
            if self.neighbours[j]:
                self.neighbours[j].pop(0)
                return True
            del self.neighbours[j], self.neighbour_target[j]
            return True
        if self.history:
            self.history.pop(0)
            return True
        return False


class PromptBuilder:
    """Turns CTR samples (+ retrieved neighbour users) into token ids for the backbone.

    Args:
        dataset: item text comes from here.
        backbone: its tokenizer and chat template render the prompt.
        train_sequences: ``UserSequences`` of the *training* interactions; neighbours' items come
            only from here.
        config: lengths and the token budget.
    """

    def __init__(self, dataset: Dataset, backbone: Backbone, train_sequences: UserSequences, config: PromptConfig):
        self.dataset = dataset
        self.backbone = backbone
        self.train = train_sequences
        self.config = config
        self.scale = 10 if dataset.name == "bookcrossing" else 5
        self.noun = {"ml-100k": "movie", "bookcrossing": "book"}.get(dataset.name, "item")

    def _short(self, item: int, rating: float | None = None) -> str:
        # Titles only for context items: attributes would double the prompt length.
        title = str(self.dataset.items.at[int(item), "title"])
        return title if rating is None else f"{title} ({rating:g})"

    def parts(self, samples: Samples, sample_id, neighbours: np.ndarray | None) -> _Parts:
        """The untruncated pieces of one sample's prompt (see the module docstring)."""
        row = samples.frame.loc[sample_id]
        items, ratings, _ = samples.history(sample_id)
        items, ratings = items[-self.config.history_len:], ratings[-self.config.history_len:]
        target = int(row["item"])
        hoods, rated = [], []
        for n in [] if neighbours is None else np.asarray(neighbours).ravel():
            if n < 0:  # padding: fewer than k users qualified
                continue
            # All of the neighbour's training events before the sample (to find the target),
            # of which the most recent ``neighbour_items`` are shown.
            n_items, n_ratings, _ = neighbour_events(
                self.train, int(n), int(row["timestamp"]), 1 << 30, has_timestamps=self.dataset.has_timestamps
            )
            hit = np.flatnonzero(n_items == target)
            rated.append(f"{n_ratings[hit[-1]]:g}" if len(hit) else None)
            shown = slice(max(0, len(n_items) - self.config.neighbour_items), len(n_items))
            hoods.append([self._short(i, r) for i, r in zip(n_items[shown], n_ratings[shown])])
        return _Parts(
            history=[self._short(i, r) for i, r in zip(items, ratings)],
            neighbours=hoods,
            neighbour_target=rated,
            target=item_line(self.dataset, target),
            mean_rating=float(np.mean(ratings)) if len(ratings) else None,
            scale=self.scale,
            noun=self.noun,
        )

    def encode(self, samples: Samples, sample_id, neighbours: np.ndarray | None = None) -> list[int]:
        """Token ids of one sample's prompt within the budget; the answer is read after the last.

        Raises:
            ConfigError: the fixed parts alone (instruction, target, question) exceed the budget.
        """
        parts = self.parts(samples, sample_id, neighbours)
        while True:
            ids = encode_chat(self.backbone, parts.render(), SYSTEM)
            if len(ids) <= self.config.max_tokens:
                return ids
            if not parts.drop_one():
                raise ConfigError(
                    f"sample {sample_id}: the prompt needs {len(ids)} tokens without any history, "
                    f"more than max_tokens={self.config.max_tokens}; raise the budget"
                )

    def encode_all(self, samples: Samples, neighbours: np.ndarray | None = None) -> list[list[int]]:
        """Encode every sample; ``neighbours`` is ``[len(samples), k]`` (row i for sample i) or None."""
        ids = samples.frame.index
        return [self.encode(samples, sid, None if neighbours is None else neighbours[i]) for i, sid in enumerate(ids)]
