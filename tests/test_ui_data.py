"""The UI's display helpers (``ui.data``): pure functions of numbers and library objects, no Streamlit run."""

from __future__ import annotations

import torch

from prune_explorer.execution.labels import CSR, DENSE, DENSE_ZEROS, compacted_label
from prune_explorer.timing import Timing
from ui import data, formats, speed_charts


def test_latency_headline_never_shows_a_ratio_for_the_same_kernel_or_within_noise():
    fast, slow = [5.0] * 7, [10.0] * 7
    # Two dense matmuls: a 2× gap is machine noise, whatever the numbers say.
    assert formats.latency_ratio(Timing(slow, DENSE), Timing(fast, DENSE_ZEROS)) == "~1.00×, same kernel"
    # Another kernel, no spread: the ratio is believed.
    assert formats.latency_ratio(Timing(slow, DENSE), Timing(fast, CSR)) == "0.50×"
    # Another kernel, a gap inside the spread: no ratio either.
    noisy = [8.0, 12.0, 9.0, 11.0, 10.0, 8.5, 11.5]
    assert formats.latency_ratio(Timing(noisy, DENSE), Timing([x + 0.5 for x in noisy], CSR)) == (
        "~1.00×, within noise"
    )
    assert formats.latency_ratio(Timing(slow, DENSE), Timing(fast, CSR), same=True) == "~1.00×, same kernel"


def test_kernel_summary_is_short_and_counts_layers():
    counts = {
        DENSE_ZEROS: 20,
        compacted_label(64, 32, "rows"): 8,
        f"{CSR} at 1 token; {DENSE_ZEROS} at 128 tokens": 2,
        CSR: 150,
    }
    assert formats.kernel_summary(counts) == (
        "CSR in 150 layers, dense in 20, compacted dense in 8, CSR or dense by token count in 2"
    )
    assert formats.kernel_summary({DENSE: 1}) == "dense in 1 layer"


def test_sizes_read_in_readable_units():
    assert [formats.megabytes(n) for n in (812, 4_200, 1_234_567, 2_500_000_000)] == [
        "812 bytes",
        "4.2 KB",
        "1.2 MB",
        "2.50 GB",
    ]


def test_speed_series_have_clearly_distinct_colours():
    names = [
        "dense", "CSR", "auto", "structured MLP", "ideal (FLOPs, unstructured)", "memory-bound (CSR bytes)",
        "dense (zeros multiplied)", "CSR int32", "compacted (rows removed)", "ideal (FLOPs)",
    ]  # fmt: skip
    colours = [speed_charts.speed_color(n) for n in names]
    e2e, layer = colours[:6], colours[6:]
    assert len(set(e2e)) == 6 and len(set(layer)) == 4


def test_perplexity_reads_the_same_everywhere():
    assert formats.perplexity_text(15.1149) == "15.11"
    assert formats.perplexity_text(23456.7) == "23457"
    assert formats.perplexity_text(17941927964.17) == "1.8e10"
    assert formats.perplexity_text(17941927959.68, signed=True) == "+1.8e10"
    assert formats.perplexity_text(-0.5, signed=True) == "-0.50"  # st.metric shows a drop only for "-"
    assert formats.perplexity_text(float("inf")) == "∞" and formats.perplexity_text(float("nan")) == "n/a"
    assert (
        float(formats.perplexity_text(17941927964.17)) == 1.8e10
    )  # still a number a test or a reader can parse
    # on a chart's labels: one decimal under 100, none under 10,000, then the exponent form
    short = [formats.perplexity_text(v, short=True) for v in (4.4875, 38.2, 2345.6, 36812.0)]
    assert short == ["4.5", "38.2", "2346", "3.7e4"]


def test_a_long_tail_does_not_squeeze_the_histogram(llama_dense):
    name = "model.layers.0.mlp.up_proj"
    weight = llama_dense.by_name[name].weight(llama_dense.model)
    with torch.no_grad():
        weight[0, 0] = 50.0  # one outlier, as SmolLM2 has
    hist = data.magnitude_histogram(llama_dense, name, log_x=False)
    assert hist.cut and hist.largest == 50.0 and hist.edges[-1] < 1.0  # the axis ends at the bulk
    assert hist.counts.sum() == weight.numel() and hist.counts[-1] >= 1  # the tail is in the last bin
    plain = data.magnitude_histogram(llama_dense, "model.layers.0.mlp.down_proj", log_x=False)
    assert not plain.cut and plain.edges[-1] == plain.largest


def test_counts_take_their_plural():
    assert [formats.plural(n, "layer") for n in (0, 1, 2, 1234)] == [
        "0 layers",
        "1 layer",
        "2 layers",
        "1,234 layers",
    ]
    assert (
        formats.plural(1, "entry", "entries") == "1 entry"
        and formats.plural(3, "entry", "entries") == "3 entries"
    )
