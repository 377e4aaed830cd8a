"""Display data: tables, histogram bins and highlighted token HTML, built from library objects.

Nothing here changes a model; it reads rankings, counts and token ids and shapes them for a chart or a table.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from prune_explorer.measure.evaluate import probabilities, top_k
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import EXTRA_KINDS, PrunableLayer, select
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.ranking import layer_ranking
from prune_explorer.state import PruningState
from ui import results

KIND_LABELS = {
    "attn_q": "attention q",
    "attn_k": "attention k",
    "attn_v": "attention v",
    "attn_qkv": "attention qkv",
    "attn_o": "attention out",
    "mlp_gate": "MLP gate",
    "mlp_up": "MLP up",
    "mlp_down": "MLP down",
    "other": "other linear",
    "embedding": "embedding",
    "lm_head": "LM head",
}


def short_name(layer: PrunableLayer) -> str:
    """``model.layers.3.self_attn.q_proj`` -> ``3 · self_attn.q_proj``; names outside blocks stay whole."""
    if layer.block < 0:
        return layer.name
    parts = layer.name.split(".")
    idx = parts.index(str(layer.block))
    return f"{layer.block} · {'.'.join(parts[idx + 1 :])}"


def shown_layers(dense: DenseModel, settings: MagnitudeSettings | None) -> list[PrunableLayer]:
    """Every layer a user can look at: all but embeddings and LM head, which show only when included."""
    include_extras = settings is not None and any(k in settings.kinds for k in EXTRA_KINDS)
    return [layer for layer in dense.layers if include_extras or layer.kind not in EXTRA_KINDS]


def selected(dense: DenseModel, settings: MagnitudeSettings | None) -> list[PrunableLayer]:
    return select(dense.layers, settings.kinds) if settings is not None else select(dense.layers)


def layer_table(
    state: PruningState, layers: Sequence[PrunableLayer], selected_names: set[str]
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": [layer.name for layer in layers],
            "kind": [KIND_LABELS.get(layer.kind, layer.kind) for layer in layers],
            "block": [layer.block if layer.block >= 0 else None for layer in layers],
            "shape (out × in)": [f"{layer.shape[0]} × {layer.shape[1]}" for layer in layers],
            "parameters": [layer.numel for layer in layers],
            "takes part": [layer.name in selected_names for layer in layers],
            "sparsity %": [100.0 * state.sparsity(layer.name) for layer in layers],
        }
    )


def sparsity_grid(
    state: PruningState, layers: Sequence[PrunableLayer]
) -> tuple[list[str], list[str], np.ndarray]:
    """Per-layer sparsity (%) as a kinds × blocks grid (NaN where a block has no layer of that kind)."""
    kinds = list(dict.fromkeys(layer.kind for layer in layers))
    blocks = sorted({layer.block for layer in layers})
    grid = np.full((len(kinds), len(blocks)), np.nan)
    for layer in layers:
        grid[kinds.index(layer.kind), blocks.index(layer.block)] = 100.0 * state.sparsity(layer.name)
    block_labels = [str(b) if b >= 0 else "outside blocks" for b in blocks]
    return [KIND_LABELS.get(k, k) for k in kinds], block_labels, grid


@dataclass(frozen=True)
class Histogram:
    """Counts of |w| in bins ``edges[i] < |w| <= edges[i+1]`` (the first bin also holds its left edge).

    ``largest``: the largest |w|; when it lies beyond ``edges[-1]`` (a long tail cut off so the bulk is
    readable), the last bin also holds every weight above its right edge.
    """

    edges: np.ndarray  # float64 (bins + 1,)
    counts: np.ndarray  # int64 (bins,)
    largest: float = 0.0

    @property
    def cut(self) -> bool:
        return self.largest > float(self.edges[-1])


def magnitude_histogram(dense: DenseModel, name: str, log_x: bool, bins: int = 60) -> Histogram:
    """|w| histogram of one layer from its sorted magnitudes (a binary search per edge); cached per layer."""
    return results.shared(
        dense, ("histogram", name, log_x, bins), lambda: _histogram(dense, name, log_x, bins)
    )


TAIL_QUANTILE = 0.999  # a linear |w| axis ends here when the largest weights lie far beyond it


def _histogram(dense: DenseModel, name: str, log_x: bool, bins: int) -> Histogram:
    """Bins over the sorted |w|. On a linear axis a few outliers (SmolLM2 has |w| 50× the bulk) would squeeze
    every weight, and every threshold, into the first bins: the axis ends near the 99.9th percentile instead
    and the last bin takes the tail."""
    scores = layer_ranking(dense, name).sorted_scores
    top = float(scores[-1]) or 1.0
    if log_x:
        positive = scores[scores > 0]
        low = float(positive[0]) if positive.numel() else top / 1e6
        edges = np.geomspace(low, top, bins + 1)
    else:
        tail = float(scores[int(TAIL_QUANTILE * (scores.numel() - 1))])
        edges = np.linspace(0.0, top if tail > top / 2 or tail <= 0 else 1.2 * tail, bins + 1)
    at_or_below = torch.searchsorted(scores, torch.as_tensor(edges, dtype=scores.dtype), right=True).numpy()
    counts = np.diff(at_or_below)
    counts[0] += at_or_below[0]
    counts[-1] += scores.numel() - at_or_below[-1]  # the tail beyond a cut axis
    return Histogram(edges=edges, counts=counts.astype(np.int64), largest=top)


def pruned_counts(state: PruningState, name: str, edges: np.ndarray) -> np.ndarray:
    """int64 (bins,): how many of the weights the current mask removes fall in each |w| bin."""
    layer = state.dense.by_name[name]
    dense_w = layer.weight(state.dense.model).detach()
    gone = dense_w[~state.mask(name)].abs().numpy()
    counts, _ = np.histogram(np.clip(gone, edges[0], edges[-1]), bins=edges)
    return counts.astype(np.int64)


def layer_threshold(state: PruningState, name: str) -> float:
    """The largest |w| pruned in layer ``name`` now (0.0 when nothing is)."""
    return layer_ranking(state.dense, name).threshold_for(state.pruned_count(name))


def largest_magnitude(dense: DenseModel, layers: Sequence[PrunableLayer]) -> float:
    return max((float(layer_ranking(dense, layer.name).sorted_scores[-1]) for layer in layers), default=0.0)


def topk_table(tokenizer, dense_row: torch.Tensor, pruned_row: torch.Tensor, k: int = 10) -> pd.DataFrame:
    """Next-token probabilities of the union of both models' top-``k`` tokens, most likely (dense) first."""
    dense_top, pruned_top = top_k(dense_row, k), top_k(pruned_row, k)
    ids = list(dict.fromkeys([i for i, _ in dense_top] + [i for i, _ in pruned_top]))
    dense_p = dict(zip(ids, probabilities(dense_row, ids)))
    pruned_p = dict(zip(ids, probabilities(pruned_row, ids)))
    ids.sort(key=lambda i: -dense_p[i])
    pieces = tokenizer.token_pieces(ids)
    labels = [f"{piece!r}" for piece in pieces]
    return pd.DataFrame(
        {"token": labels, "dense": [dense_p[i] for i in ids], "pruned": [pruned_p[i] for i in ids]}
    )


_DIFF_STYLE = "background: rgba(255, 75, 75, 0.28); border-radius: 3px;"


def tokens_html(
    pieces: Sequence[str],
    same: Sequence[bool],
    side: str,
    rest: Sequence[str] = (),
    rest_grey_in: float = 0.0,
) -> str:
    """The continuation as HTML spans; tokens that differ from the other side's token get a red background.

    ``side`` goes into the class name (``pe-gen-dense``, ``-pruned``; ``-growing`` while the pruned text is
    generated, ``-partial`` for the previous one kept until then, ``-pinned``), so the page's style and a
    browser test can find the text. ``rest``: the previous text's tokens past these, which a growing text has
    not replaced yet (``pe-old``: turns grey ``rest_grey_in`` seconds after it is drawn, ``ui.page_style``).
    """
    spans = []
    for piece, ok in zip(pieces, same, strict=True):
        text = html.escape(piece)
        spans.append(
            f"<span>{text}</span>" if ok else f'<span class="pe-diff" style="{_DIFF_STYLE}">{text}</span>'
        )
    if rest:
        old = html.escape("".join(rest))
        spans.append(f'<span class="pe-old" style="animation-delay: {rest_grey_in:.3f}s">{old}</span>')
    body = "".join(spans) or "<em>(no tokens)</em>"
    return (
        f'<div class="pe-gen pe-gen-{side}" style="white-space: pre-wrap; line-height: 1.7; '
        f"font-size: 1.05rem; padding: 0.6rem 0.8rem; border: 1px solid rgba(128,128,128,0.35); "
        f'border-radius: 0.5rem; min-height: 4rem;">{body}</div>'
    )


def first_divergence(dense_ids: Sequence[int], pruned_ids: Sequence[int]) -> int | None:
    """Index of the first new token where the two continuations differ, or None if they are identical."""
    for i, (a, b) in enumerate(zip(dense_ids, pruned_ids, strict=False)):
        if a != b:
            return i
    return None if len(dense_ids) == len(pruned_ids) else min(len(dense_ids), len(pruned_ids))


def weight_patch(
    state: PruningState, name: str, rows: int = 12, cols: int = 24
) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner of a layer's (out, in) weight as float (rows, cols): dense, and the session's now."""
    layer = state.dense.by_name[name]
    dense_w = layer.weight(state.dense.model)[:rows, :cols]
    pruned_w = state.weight(name)[:rows, :cols]
    return dense_w.detach().float().numpy().copy(), pruned_w.detach().float().numpy().copy()


LOSS_LIMIT = 3.0  # nats at which the token colour saturates


def _loss_colour(rise: float, limit: float) -> str:
    strength = min(1.0, abs(rise) / limit) * 0.85
    rgb = "228, 87, 86" if rise > 0 else "76, 120, 168"
    return f"rgba({rgb}, {strength:.2f})"


def loss_rise_html(
    pieces: Sequence[str], dense_nll: Sequence[float], pruned_nll: Sequence[float], limit: float = LOSS_LIMIT
) -> str:
    """Tokens of a text as HTML spans coloured by how much their loss rose under the pruned model.

    Red: the pruned model finds the token harder (saturating at ``limit`` nats), blue: easier, clear: the
    same. Hovering shows both losses. ``pieces[i]`` is the token predicted with losses ``dense_nll[i]`` and
    ``pruned_nll[i]``.
    """
    spans = []
    for piece, d, p in zip(pieces, dense_nll, pruned_nll, strict=True):
        rise = float(p) - float(d)
        title = f"{piece!r}: dense {float(d):.2f} → pruned {float(p):.2f} nats ({rise:+.2f})"
        spans.append(
            f'<span class="pe-tok" title="{html.escape(title)}" data-rise="{rise:.3f}" style="background: '
            f'{_loss_colour(rise, limit)}; border-radius: 2px;">{html.escape(piece)}</span>'
        )
    return (
        '<div class="pe-loss" style="white-space: pre-wrap; line-height: 1.8; font-size: 1.0rem; '
        "padding: 0.6rem 0.8rem; border: 1px solid rgba(128,128,128,0.35); border-radius: 0.5rem; "
        f'max-height: 22rem; overflow-y: auto;">{"".join(spans)}</div>'
    )


def loss_legend_html(limit: float = LOSS_LIMIT) -> str:
    """A colour bar for :func:`loss_rise_html`: blue = easier after pruning, red = harder."""
    return (
        '<div class="pe-loss-legend" style="display: flex; align-items: center; gap: 0.5rem; '
        'font-size: 0.85rem; margin: 0.3rem 0;">'
        f"<span>loss fell ≥ {limit:g} nats</span>"
        '<span style="flex: 0 0 14rem; height: 0.8rem; border-radius: 3px; border: 1px solid '
        "rgba(128,128,128,0.4); background: linear-gradient(to right, rgba(76,120,168,0.85), "
        'rgba(255,255,255,0), rgba(228,87,86,0.85));"></span>'
        f"<span>rose ≥ {limit:g} nats</span>"
        "<span style='opacity: 0.7'>(hover a token for its losses)</span></div>"
    )
