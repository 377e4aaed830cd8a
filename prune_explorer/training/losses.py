"""Training losses: distillation from the dense model (logit KL, per-layer hidden MSE) and next-token CE.

Tensors in, a scalar out; no model, no optimizer. Shapes: logits (B, T, V), hidden states (B, T, H).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def distill_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher || student) of the softened next-token distributions, mean over positions, times T²
    (Hinton et al. 2015: keeps the gradient scale independent of the temperature).

    Args:
        student_logits: float (B, T, V), with grad.
        teacher_logits: float (B, T, V), no grad.
        temperature: T > 0 (1: the plain distributions).
    Returns:
        float32 scalar, in nats.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ in shape"
        )
    vocab = student_logits.shape[-1]
    s = F.log_softmax(student_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def hidden_mse(
    student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Per-layer feature loss, SquareHead-style (Kurtic et al. 2023): mean over layers of
    ‖h_s − h_t‖² / ‖h_t‖² (each layer's MSE normalised by the teacher's mean square, so layers of growing
    scale weigh alike).

    Args:
        student_hidden, teacher_hidden: equal-length sequences of float (B, T, H), one per layer output.
    Returns:
        float32 scalar.
    """
    if len(student_hidden) != len(teacher_hidden) or not student_hidden:
        raise ValueError(
            f"need the same non-zero number of hidden states, got {len(student_hidden)} "
            f"and {len(teacher_hidden)}"
        )
    terms = [
        ((s.float() - t.float()) ** 2).mean() / (t.float() ** 2).mean().clamp_min(1e-12)
        for s, t in zip(student_hidden, teacher_hidden, strict=True)
    ]
    return torch.stack(terms).mean()


def next_token_ce(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``ids[:, 1:]`` from ``logits[:, :-1]``; logits float (B, T, V),
    ids int64 (B, T)."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, vocab), ids[:, 1:].reshape(-1))
