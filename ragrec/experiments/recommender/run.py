"""One step's run: what every function of the recommender step hands down.

The recommender's functions need the same five things: the profile's prepared data, where its
results go, whether to draw progress bars, and the retrievers that pick each prompt's neighbours
(one set for test and validation prompts, one for training prompts, which must not see their own
target). They travel together as a :class:`Run`, the way nanoGPT passes ``config``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ragrec.config import Profile
from ragrec.experiments.recommender.prepare import Prepared, checkpoint_dir
from ragrec.results import result_dir
from ragrec.retrieval.base import Retriever


@dataclass(frozen=True)
class Run:
    """A step's inputs and where it writes.

    Args:
        prepared (Prepared): the profile's dataset, split and CTR samples
            (:func:`~ragrec.experiments.recommender.prepare.prepare_data`).
        results_root (str or PathLike, optional): the results root.
            (default: ``$RAGREC_RESULTS`` or ``results``)
        progress (bool, optional): draw progress bars. (default: :obj:`True`)
        retrievers (Mapping[str, Retriever], optional): by context, the neighbours of test and
            validation prompts (fitted on the training interactions). (default: none)
        train_retrievers (Mapping[str, Retriever], optional): by context, the neighbours of
            training prompts, which never see the sample's own interaction
            (:func:`~ragrec.experiments.recommender.prepare.training_retrievers`). (default: ``retrievers``)
    """

    prepared: Prepared
    results_root: str | os.PathLike | None = None
    progress: bool = True
    retrievers: Mapping[str, Retriever] = field(default_factory=dict)
    train_retrievers: Mapping[str, Retriever] | None = None

    @property
    def profile(self) -> Profile:
        return self.prepared.profile

    @property
    def out_dir(self) -> Path:
        """``results/<profile>/<dataset>/``: where the step's tables go."""
        return result_dir(self.profile.name, self.profile.data.dataset, self.results_root)

    @property
    def checkpoints(self) -> Path:
        """The git-ignored folder of fitted artefacts (LightGCN, LoRA and head checkpoints)."""
        return checkpoint_dir(self.profile, self.results_root)

    @property
    def training_retrievers(self) -> Mapping[str, Retriever]:
        """The retrievers training prompts are built with (``retrievers`` when none were given)."""
        return self.retrievers if self.train_retrievers is None else self.train_retrievers

    def with_retrievers(
        self, retrievers: Mapping[str, Retriever], train_retrievers: Mapping[str, Retriever] | None = None
    ) -> Run:
        """This run with its retrievers set."""
        return dataclasses.replace(self, retrievers=retrievers, train_retrievers=train_retrievers)
