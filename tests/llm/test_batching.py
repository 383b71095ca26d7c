"""Prompts are grouped by length and padded on the side asked for."""

import numpy as np
import pytest

from ragrec.errors import ConfigError
from ragrec.llm.batching import bucketed_batches, length_sorted_batches, pad_prompts


def test_batches_cover_every_prompt_once_longest_first():
    prompts = [[1] * n for n in (3, 9, 1, 7, 5)]
    batches = length_sorted_batches(prompts, 2)
    assert batches == [[1, 3], [4, 0], [2]]
    with pytest.raises(ConfigError):
        length_sorted_batches(prompts, 0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_keeps_tokens_in_order_and_masks_the_rest(side):
    ids, mask = pad_prompts([[5, 6, 7], [8]], pad_id=0, padding_side=side)
    assert ids.shape == mask.shape == (2, 3)
    assert ids[1][mask[1]].tolist() == [8] and mask.sum().item() == 4
    assert ids[1].tolist() == ([0, 0, 8] if side == "left" else [8, 0, 0])


def test_bucketed_batches_cover_every_prompt_once_pad_little_and_follow_the_seed():
    lengths = np.random.default_rng(1).choice([135, 195], 403) + np.random.default_rng(2).integers(0, 20, 403)
    batches = bucketed_batches(lengths, 4, np.random.default_rng(0), window=10)
    assert sorted(np.concatenate(batches).tolist()) == list(range(403))
    assert len(batches) == 101 and sum(len(b) < 4 for b in batches) == 1

    def padded_tokens(bs):
        return sum(lengths[b].max() * len(b) for b in bs)

    random_batches = np.array_split(np.random.default_rng(0).permutation(403), 101)
    assert padded_tokens(batches) < 0.97 * padded_tokens(random_batches)
    again = bucketed_batches(lengths, 4, np.random.default_rng(0), window=10)
    assert all((a == b).all() for a, b in zip(batches, again))
    assert not all(
        (a == b).all()
        for a, b in zip(batches, bucketed_batches(lengths, 4, np.random.default_rng(1), window=10))
    )
