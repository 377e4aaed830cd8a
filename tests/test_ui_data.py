"""The UI's display helpers (``ui.data``): pure functions of numbers and library objects, no Streamlit run."""

from __future__ import annotations

from prune_explorer.execution.labels import CSR, DENSE, DENSE_ZEROS
from prune_explorer.timing import Timing
from ui import data


def test_latency_headline_never_shows_a_ratio_for_the_same_kernel_or_within_noise():
    fast, slow = [5.0] * 7, [10.0] * 7
    # Two dense matmuls: a 2× gap is machine noise, whatever the numbers say.
    assert data.latency_ratio(Timing(slow, DENSE), Timing(fast, DENSE_ZEROS)) == "~1.00×, same kernel"
    # Another kernel, no spread: the ratio is believed.
    assert data.latency_ratio(Timing(slow, DENSE), Timing(fast, CSR)) == "0.50×"
    # Another kernel, a gap inside the spread: no ratio either.
    noisy = [8.0, 12.0, 9.0, 11.0, 10.0, 8.5, 11.5]
    assert data.latency_ratio(Timing(noisy, DENSE), Timing([x + 0.5 for x in noisy], CSR)) == (
        "~1.00×, within noise"
    )
    assert data.latency_ratio(Timing(slow, DENSE), Timing(fast, CSR), same=True) == "~1.00×, same kernel"
