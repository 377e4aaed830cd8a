"""Protocol cards: the words under every perplexity and KL the app shows (what text, how many tokens, which
window and stride, which calibration), built by ``measure.evaluate.protocol_text`` exactly as the exported
model card states them."""

from __future__ import annotations

from collections.abc import Iterable

from prune_explorer.measure.evaluate import calibration_words, protocol_text
from prune_explorer.measure.sensitivity import HEAD_DELTA, Sensitivity
from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.pruning.calibration import CalibrationBatch
from prune_explorer.pruning.methods import get_method
from prune_explorer.pruning.policies import MagnitudeSettings
from ui.outputs import eval_ids


def _calibration(applied: MagnitudeSettings | None) -> str | None:
    spec = getattr(applied, "calibration", None)
    return calibration_words(spec.source, spec.n_sequences, spec.seq_len) if spec is not None else None


def batch_words(batch: CalibrationBatch | None) -> str | None:
    """A calibration batch in a card's words ("built-in stories text, 6 sequences × 128 tokens"), or None."""
    return None if batch is None else calibration_words(batch.source, batch.n_sequences, batch.seq_len)


def held_out_tokens(dense: DenseModel) -> int:
    """Predicted tokens of one held-out perplexity: the evaluation text in non-overlapping windows of the
    model's context, each window's first token context only (as ``measure.evaluate.perplexity`` counts)."""
    n, window = len(eval_ids(dense)), context_length(dense.model)
    return sum(min(window, n - start) - 1 for start in range(0, n - 1, window))


def held_out_card(dense: DenseModel, calibration: str | None, tokens: int | None = None) -> str:
    """The protocol of any perplexity on the held-out evaluation text (``tokens``: predicted tokens, by
    default :func:`held_out_tokens`); ``calibration``: the pruning's, in words, or None."""
    text = f"built-in {dense.info.get('text_set', 'stories')} evaluation text"
    count = held_out_tokens(dense) if tokens is None else tokens
    return protocol_text(text, count, context_length(dense.model), calibration=calibration)


def perplexity_card(dense: DenseModel, tokens: int, applied: MagnitudeSettings | None) -> str:
    """The protocol of a held-out perplexity: the model's evaluation text in windows of its context."""
    return held_out_card(dense, _calibration(applied), tokens)


def prompt_card(dense: DenseModel, prompt_tokens: int, applied: MagnitudeSettings | None) -> str:
    """The protocol of the next-token KL and agreement: the prompt, one window, every position compared."""
    return protocol_text(
        "prompt (KL(dense ‖ pruned) of the next-token distributions, in nats, at each position)",
        prompt_tokens,
        max(prompt_tokens, 1),
        calibration=_calibration(applied),
    )


def token_loss_card(dense: DenseModel, n_ids: int, applied: MagnitudeSettings | None) -> str:
    """The protocol of per-token losses on the first ``n_ids`` tokens of the evaluation text (one window)."""
    text = f"built-in {dense.info.get('text_set', 'stories')} evaluation text (its first window)"
    return protocol_text(text, max(n_ids - 1, 0), max(n_ids, 1), calibration=_calibration(applied))


def _labels(methods: Iterable[str]) -> str:
    return ", ".join(get_method(m).label for m in methods)


def methods_calibration(
    methods: Iterable[str], batch: CalibrationBatch | None, readers: Iterable[str] = ()
) -> str | None:
    """Calibration words for points of several methods: the batch, naming who reads it (the calibrated
    methods and any ``readers`` such as OWL's ratios), and "none" for the methods that read no activations.

    None when nothing reads the batch (the card then says the methods read no activations).
    """
    methods, readers = list(dict.fromkeys(methods)), list(readers)
    calibrated = [m for m in methods if get_method(m).calibrated]
    words = batch_words(batch)
    if words is None or not (calibrated or readers):
        return None
    who = ", ".join(([_labels(calibrated)] if calibrated else []) + readers)
    plain = [m for m in methods if m not in calibrated]
    rest = f"; none for {_labels(plain)}" if plain and not readers else ""
    return f"{words} (read by {who}){rest}"


def points_card(dense: DenseModel, methods: Iterable[str], batch: CalibrationBatch | None) -> str:
    """The protocol of the Compare page's points: each scores the held-out text after one method pruned a
    scratch copy; calibrated methods read the sidebar's batch."""
    return held_out_card(dense, methods_calibration(methods, batch))


def allocation_card(dense: DenseModel, method: str, batch: CalibrationBatch | None) -> str:
    """The protocol of the allocation comparison: ``method``'s points under each allocation on the held-out
    text; OWL's outlier ratios read the calibration batch whatever the method."""
    return held_out_card(dense, methods_calibration([method], batch, readers=["OWL's outlier ratios"]))


def sensitivity_card(result: Sensitivity) -> str:
    """The protocol of a sensitivity run: KL and perplexity on its held-out tokens, in sequences of its
    length; the calibration read by a calibrated method (the instant estimate always reads it)."""
    p, c = result.protocol, result.calibration
    words = calibration_words(c["source"], c["n_sequences"], c["seq_len"])
    text = f"{p['text']} (KL(dense ‖ pruned) of the next-token distributions, one group pruned at a time)"
    read = words if get_method(result.method).calibrated else None
    card = protocol_text(text, p["predictions"], p["seq_len"], calibration=read)
    head = (
        " Logits: the dense logits plus the LM head applied in bfloat16 to each variant's change (KL within "
        "about 1% of float32's)."
        if result.logits == HEAD_DELTA
        else ""
    )
    return f"{card}. The instant estimate reads {words}.{head}"
