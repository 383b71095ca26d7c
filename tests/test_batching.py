"""Prompts are grouped by length and padded on the side asked for."""

import pytest

from ragrec.batching import length_sorted_batches, pad_prompts
from ragrec.errors import ConfigError


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
