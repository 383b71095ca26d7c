"""Timing helpers: the summary's arithmetic and the thread setting that is always restored."""

import pytest
import torch

from ragrec.experiments.timing import summarize, time_calls, torch_threads


def test_summary_is_items_over_total_seconds_and_percentiles_of_calls():
    latency = summarize([0.1, 0.2, 0.3, 0.4], items_per_call=[2, 2, 2, 4])
    assert latency.per_s == pytest.approx(10 / 1.0)
    assert latency.p50_ms == pytest.approx(250.0) and latency.n == 4
    assert summarize([0.5, 0.5]).per_s == pytest.approx(2.0)  # one item per call


def test_time_calls_warms_up_untimed_then_times_every_input():
    seen = []
    seconds = time_calls(seen.append, ["a", "b", "c"], warmup=2)
    assert seen == ["a", "b", "a", "b", "c"] and len(seconds) == 3


@pytest.mark.parametrize("threads", [1, None], ids=["one-thread", "leave-as-is"])
def test_torch_threads_are_restored_even_on_error(threads):
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(threads):
        assert torch.get_num_threads() == (threads or before)
        raise RuntimeError("inside the block")
    assert torch.get_num_threads() == before
