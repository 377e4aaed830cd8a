"""Protocol cards: the words under every perplexity and KL the app shows (what text, how many tokens, which
window and stride, which calibration), built by ``measure.evaluate.protocol_text`` exactly as the exported
model card states them."""

from __future__ import annotations

from prune_explorer.measure.evaluate import calibration_words, protocol_text
from prune_explorer.models.dense import DenseModel, context_length
from prune_explorer.pruning.policies import MagnitudeSettings


def _calibration(applied: MagnitudeSettings | None) -> str | None:
    spec = getattr(applied, "calibration", None)
    return calibration_words(spec.source, spec.n_sequences, spec.seq_len) if spec is not None else None


def perplexity_card(dense: DenseModel, tokens: int, applied: MagnitudeSettings | None) -> str:
    """The protocol of a held-out perplexity: the model's evaluation text in windows of its context."""
    text = f"built-in {dense.info.get('text_set', 'stories')} evaluation text"
    return protocol_text(text, tokens, context_length(dense.model), calibration=_calibration(applied))


def prompt_card(dense: DenseModel, prompt_tokens: int, applied: MagnitudeSettings | None) -> str:
    """The protocol of the next-token KL and agreement: the prompt, one window, every position compared."""
    return protocol_text(
        "prompt (KL(dense ‖ pruned) of the next-token distributions, in nats, at each position)",
        prompt_tokens,
        max(prompt_tokens, 1),
        calibration=_calibration(applied),
    )
