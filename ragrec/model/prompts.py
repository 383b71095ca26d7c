"""RAG prompts for CTR: instruction + the user's history + similar users' histories + the target.

The paper's template is ``[instruction] + [target user's history] + [similar users' histories] +
[target item]`` answered with Yes/No. Every interaction shown is strictly earlier than the
sample and, for other users, a *training* interaction (DESIGN §5); the target user's own
history follows the samples' ``history_scope``. Three like shares carry the
collaborative signal a small LLM can learn to read, each by the dataset's own label rule
(``Dataset.liked``):

- the target item's: the share of likes among its training-period ratings before the sample's
  time (an item-bias signal; every context gets it);
- the retrieved users' vote: how many of the ``vote_k`` most similar users rated the target
  before the sample's time and what share of them liked it, and for each shown neighbour whether
  and how they rated it (only with a retriever);
- the user's: the share of the likes in their history window (a user-bias signal; a 135M model
  reads one number far more easily than it averages ten ratings).

How far the item's and the user's shares carry when read off linearly is the ``prompt_shares``
baseline (:mod:`ragrec.experiments.reporting.baselines`): the reference the tuned LLM is learning to reach.

The shares are whole percentages and sit last, right before the question: among the many
digits of a history prompt a small model must find the one token whose value decides, and a
percentage's first digit is that token. The wording was fixed in earlier sessions, before the
rule that validation chooses; the method chapter's "Prompt" section says how, and the wordings
compared are in this module's git history.

Under a token budget the prompt is shortened in this order, never touching the instruction, the
target item or the question: the oldest items of the furthest neighbour first, then whole
neighbours (furthest first), then the oldest items of the user's own history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ragrec.data import Dataset, Samples, UserSequences
from ragrec.data.text import item_line
from ragrec.errors import ConfigError
from ragrec.llm.backbone import Backbone, encode_chat
from ragrec.model.cf_tokens import cf_marker
from ragrec.retrieval.base import neighbour_events

SYSTEM = "You are a recommender system. Answer only Yes or No."


@dataclass(frozen=True)
class PromptConfig:
    """How much context a prompt carries.

    Attributes:
        history_len: items of the target user's own history shown (most recent).
        k: retrieved neighbours whose own recent items are shown.
        neighbour_items: items shown per shown neighbour (most recent before the sample).
        vote_k: neighbours polled for the target: "n of vote_k similar users rated it, p% liked
            it" — the retrieved users' collaborative signal on the target item. 0 turns it off.
        max_tokens: token budget of the whole rendered prompt (chat template included).
        cf_tokens: add the two collaborative slots (one marker token in the user line, one in the
            target line) that :class:`ragrec.model.cf_tokens.CFTokens` fills; beyond the paper.
    """

    history_len: int = 10
    k: int = 3
    neighbour_items: int = 3
    vote_k: int = 20
    max_tokens: int = 256
    cf_tokens: bool = False

    def __post_init__(self) -> None:
        if (
            self.history_len < 1
            or self.k < 0
            or self.neighbour_items < 0
            or self.vote_k < 0
            or self.max_tokens < 8
        ):
            raise ConfigError(f"invalid prompt configuration {self}")

    @property
    def retrieve_k(self) -> int:
        """How many neighbours a prompt needs from the retriever."""
        return max(self.k, self.vote_k)


@dataclass
class _Parts:
    """The pieces of one prompt, so truncation can drop whole items."""

    history: list[str]
    neighbours: list[list[str]]  # per shown neighbour: its items
    neighbour_target: list[str | None]  # per shown neighbour: how it rated the target, if it did
    target: str
    item_likes: tuple[int, int] = (0, 0)  # (earlier training ratings of the target, likes among them)
    liked_share: float | None = None  # share of the user's history window that were likes
    vote: tuple[int, int, int] | None = None  # (raters, polled, raters who liked it)
    scale: int = 5
    noun: str = field(default="item")
    cf_marker: str | None = None  # the collaborative slots' marker token, if the prompt has them

    def render(self) -> str:
        # The numbers the answer depends on most sit last, right before the question: a
        # constant number of tokens from the position the answer is read at, which a small model
        # learns to attend to far more easily than a number buried before a variable-length list.
        user = "User's" if self.cf_marker is None else f"User {self.cf_marker}'s"
        lines = [f"{user} recent ratings (1-{self.scale}): " + ("; ".join(self.history) or "none")]
        for j, (items, rated) in enumerate(zip(self.neighbours, self.neighbour_target)):
            said = f"rated it {rated}" if rated else "not rated"
            lines.append(f"Similar user {j + 1} ({said}): " + ("; ".join(items) or "none"))
        slot = "" if self.cf_marker is None else f" {self.cf_marker}"
        lines.append(f"Target {self.noun}{slot}: {self.target}")
        raters, likes = self.item_likes
        said = _percent(likes / raters) if raters else "none"
        lines.append(f"Share of earlier raters who liked this {self.noun}: {said}")
        if self.vote is not None:
            raters, polled, likes = self.vote
            said = f", {_percent(likes / raters)} liked it" if raters else ""
            lines.append(f"Similar users who rated this {self.noun}: {raters} of {polled}{said}")
        if self.liked_share is not None:
            lines.append(f"Share of recent {self.noun}s the user liked: {_percent(self.liked_share)}")
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


def _percent(share: float) -> str:
    # A whole percentage: its first digit alone places the share to within ten points, one
    # token a small model reads far more reliably than a mean rating's decimals.
    return f"{round(100 * share)}%"


class PromptBuilder:
    """Turns CTR samples (+ retrieved neighbour users) into token ids for the backbone.

    Args:
        dataset: item text comes from here.
        backbone: its tokenizer and chat template render the prompt.
        train_sequences: ``UserSequences`` of the *training* interactions; neighbours' items come
            only from here.
        config: lengths and the token budget.
    """

    def __init__(
        self, dataset: Dataset, backbone: Backbone, train_sequences: UserSequences, config: PromptConfig
    ):
        self.dataset = dataset
        self.backbone = backbone
        self.train = train_sequences
        self.train_by_item = train_sequences.by_item(dataset.n_items)
        self.config = config
        self.scale = 10 if dataset.name == "bookcrossing" else 5
        self.noun = {"ml-100k": "movie", "bookcrossing": "book"}.get(dataset.name, "item")
        self.cf_marker = cf_marker(backbone.tokenizer)[0] if config.cf_tokens else None

    def _short(self, item: int, rating: float | None = None) -> str:
        # Titles only for context items: attributes would double the prompt length.
        title = str(self.dataset.items.at[int(item), "title"])
        return title if rating is None else f"{title} ({rating:g})"

    def parts(self, samples: Samples, sample_id, neighbours: np.ndarray | None) -> _Parts:
        """The untruncated pieces of one sample's prompt (see the module docstring)."""
        row = samples.frame.loc[sample_id]
        items, ratings, _ = samples.history(sample_id)
        target, time = int(row["item"]), int(row["timestamp"])
        hoods, rated, votes = [], [], []
        polled = [] if neighbours is None else [int(n) for n in np.asarray(neighbours).ravel() if n >= 0]
        for j, n in enumerate(polled):  # -1 is padding: fewer users qualified
            # All of the neighbour's training events before the sample (to find the target),
            # of which the most recent ``neighbour_items`` are shown.
            n_items, n_ratings, _ = neighbour_events(
                self.train, n, time, 1 << 30, has_timestamps=self.dataset.has_timestamps
            )
            hit = np.flatnonzero(n_items == target)
            if len(hit) and j < self.config.vote_k:
                votes.append(float(n_ratings[hit[-1]]))  # the neighbour's latest rating of it
            if j < self.config.k:
                rated.append(f"{n_ratings[hit[-1]]:g}" if len(hit) else None)
                shown = slice(max(0, len(n_items) - self.config.neighbour_items), len(n_items))
                hoods.append([self._short(i, r) for i, r in zip(n_items[shown], n_ratings[shown])])
        n_polled = min(len(polled), self.config.vote_k)
        # Without timestamps "before the sample" cannot be told apart: then the whole training
        # period counts, as it does for the neighbours' items (``neighbour_events``).
        when = np.array([time if self.dataset.has_timestamps else np.iinfo(np.int64).max])
        raters, likes = self.train_by_item.likes_before(np.array([target]), when)
        recent = slice(-self.config.history_len, None)
        return _Parts(
            history=[self._short(i, r) for i, r in zip(items[recent], ratings[recent])],
            neighbours=hoods,
            neighbour_target=rated,
            target=item_line(self.dataset, target),
            item_likes=(int(raters[0]), int(likes[0])),
            liked_share=float(np.mean(self.dataset.liked(ratings))) if len(ratings) else None,
            vote=(len(votes), n_polled, int(self.dataset.liked(votes).sum())) if n_polled else None,
            scale=self.scale,
            noun=self.noun,
            cf_marker=self.cf_marker,
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
        """Encode every sample; ``neighbours`` is ``[len(samples), retrieve_k]`` (row i for sample
        i, most similar first) or None."""
        ids = samples.frame.index
        return [
            self.encode(samples, sid, None if neighbours is None else neighbours[i])
            for i, sid in enumerate(ids)
        ]
