"""Numbers and kernels as people read them: perplexities, bytes, counts with their plural, kernel labels in
a word or two, and latency pairs read against their noise."""

from __future__ import annotations

import math

from prune_explorer.execution.labels import COMPACTED, CSR, DENSE_LABELS, SEMI, family
from prune_explorer.timing import Timing


def plural(n: int, word: str, words: str | None = None) -> str:
    """ "1 layer", "2 layers", "1,234 weights", "3 entries" (``words``: an irregular plural)."""
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def small_number(x: float) -> str:
    """Four decimals, or scientific notation for a value that small rounding would show as zero."""
    return f"{x:.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.2e}"


def perplexity_text(value: float, signed: bool = False, short: bool = False) -> str:
    """A perplexity people can read, on every page: "15.11", "2345", "1.8e10" (not 17941927964.17), "∞".

    ``signed`` writes a difference: "+4.49", "+1.8e10", "-0.50" (an ASCII minus: ``st.metric`` reads a delta's
    direction, arrow and colour from its first character). ``short``, for labels on a chart: one decimal
    under 100, none under 10,000 ("4.5", "38.2", "2346", "3.7e4").
    """
    if math.isnan(value):
        return "n/a"
    sign = ("+" if value >= 0 else "-") if signed else ("−" if value < 0 else "")
    size = abs(value)
    if math.isinf(size):
        return f"{sign}∞"
    if size < (100 if short else 1e4):
        return f"{sign}{size:.{1 if short else 2}f}"
    if size < (1e4 if short else 1e6):
        return f"{sign}{size:.0f}"
    mantissa, exponent = f"{size:.1e}".split("e")
    return f"{sign}{mantissa}e{int(exponent)}"


def megabytes(nbytes: float) -> str:
    """Bytes as people read them: "812 bytes", "4.2 KB", "12.3 MB", "1.25 GB" (never "0.0012 MB")."""
    if nbytes >= 1e9:
        return f"{nbytes / 1e9:.2f} GB"
    if nbytes >= 1e6:
        return f"{nbytes / 1e6:.1f} MB"
    if nbytes >= 1e3:
        return f"{nbytes / 1e3:.1f} KB"
    return f"{int(nbytes)} bytes"


def short_kernel(label: str) -> str:
    """A kernel label (``execution.labels``) in a word or two: "dense", "CSR", "compacted", ..."""
    if label in DENSE_LABELS:
        return "dense"
    if "; " in label:  # the auto backend chose per token count
        return "CSR or dense by token count"
    if label == CSR:
        return "CSR"
    if label == SEMI:
        return "2:4 semi-structured"
    if family(label).startswith(COMPACTED):
        return "compacted dense"
    return label


def kernel_summary(counts: dict[str, int]) -> str:
    """How many layers run each kind of kernel, most first: "CSR in 150 layers, dense in 60".

    Args:
        counts: {kernel label: layers}, as ``LayerReport``s' ``kernels()`` gives them.
    """
    short: dict[str, int] = {}
    for label, n in counts.items():
        short[short_kernel(label)] = short.get(short_kernel(label), 0) + n
    parts = [f"{name} in {n}" for name, n in sorted(short.items(), key=lambda kv: -kv[1])]
    if parts:
        first_n = max(short.values())
        parts[0] += f" layer{'s' * (first_n != 1)}"
    return ", ".join(parts) or "no layers"


def same_kernel(dense_t: Timing, pruned_t: Timing) -> bool:
    """Whether both timings ran a dense matmul (zeros multiplied or not): the same work, whatever the gap."""
    return {dense_t.kernel, pruned_t.kernel} <= DENSE_LABELS


def within_noise(dense_t: Timing, pruned_t: Timing) -> bool:
    """Whether the gap between two medians is no larger than twice the larger run-to-run spread."""
    noise = max(dense_t.spread_ms, pruned_t.spread_ms)
    return abs(pruned_t.median_ms - dense_t.median_ms) <= 2 * noise


def latency_ratio(dense_t: Timing, pruned_t: Timing, same: bool | None = None) -> str:
    """The pruned / dense headline: "~1.00×, same kernel" or "~1.00×, within noise" when the gap means
    nothing, else the measured ratio ("0.42×"). A bare 0.63× for one kernel timed twice reads as a speedup.

    Args:
        same: whether both ran the same kernel; None reads it from the timings' kernel labels.
    """
    if same_kernel(dense_t, pruned_t) if same is None else same:
        return "~1.00×, same kernel"
    if within_noise(dense_t, pruned_t):
        return "~1.00×, within noise"
    return f"{pruned_t.median_ms / dense_t.median_ms:.2f}×"


def latency_measured(dense_t: Timing, pruned_t: Timing) -> str:
    """The two medians and their spreads in one line, for a caption under :func:`latency_ratio`."""
    return (
        f"Measured: dense {dense_t.median_ms:.2f} ± {dense_t.spread_ms:.2f} ms, "
        f"pruned {pruned_t.median_ms:.2f} ± {pruned_t.spread_ms:.2f} ms (median ± half IQR)."
    )


def latency_verdict(dense_t: Timing, pruned_t: Timing) -> str:
    """The gap between two timings read against their spread."""
    noise = max(dense_t.spread_ms, pruned_t.spread_ms)
    gap = pruned_t.median_ms - dense_t.median_ms
    if within_noise(dense_t, pruned_t):
        return (
            f"The gap ({gap:+.2f} ms) is within the run-to-run spread (± {noise:.2f} ms): "
            "the same work, timed twice."
        )
    return (
        f"The gap ({gap:+.2f} ms) is larger than the spread (± {noise:.2f} ms), but the work is "
        "identical: read it as machine noise (other processes, caches), and time again."
    )


def latency_reading(dense_t: Timing, pruned_t: Timing) -> str:
    """What a dense-vs-pruned latency pair means, in words: the same kernel did the same work."""
    return (
        f"Kernel that ran: **{pruned_t.kernel}**. A zero stored inside a dense matrix is still multiplied, "
        "so the pruned model does exactly as much work as the dense one. "
        f"{latency_verdict(dense_t, pruned_t)} Speed needs a sparse format or kernel that skips the zeros, "
        "or structured pruning that makes the matrices smaller."
    )
