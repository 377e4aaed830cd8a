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

    Its gradient with respect to the student's logits is T·(q − p)/N (q, p: the softened student and teacher
    distributions, N positions), kept from the forward pass in chunks of rows, in place of autograd's
    log-softmax and KL backward over a 49k vocabulary (no faster in a whole SmolLM2 run here, but never a
    (positions, vocabulary) float32 temporary beyond the gradient itself).

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
    return _DistillKL.apply(student_logits, teacher_logits.detach(), float(temperature))


# Positions per chunk of the KL's pass: (64, 49k) float32 temporaries stay a few MB, reused from the heap
# instead of fresh zeroed pages for every (512, 49k) tensor (as much time again as the arithmetic).
_KL_ROWS = 64


class _DistillKL(torch.autograd.Function):
    """:func:`distill_kl`'s value and its gradient T·(q − p)/N, both from one chunked pass over the logits;
    the gradient is kept in the student logits' dtype."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        vocab = student.shape[-1]
        s_all, t_all = student.reshape(-1, vocab), teacher.reshape(-1, vocab)
        rows = s_all.shape[0]
        q_minus_p = torch.empty(s_all.shape, dtype=student.dtype)
        kl = torch.zeros((), dtype=torch.float64)
        for i in range(0, rows, _KL_ROWS):
            s, t = s_all[i : i + _KL_ROWS].float(), t_all[i : i + _KL_ROWS].float()
            if temperature != 1.0:
                s, t = s / temperature, t / temperature
            log_q, log_p = F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)
            p = log_p.exp()
            kl += (p * (log_p - log_q)).sum(dtype=torch.float64)
            q_minus_p[i : i + _KL_ROWS] = log_q.exp_().sub_(p)
        ctx.save_for_backward(q_minus_p)
        ctx.scale, ctx.shape = temperature / rows, student.shape
        return (kl / rows * temperature**2).float()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (q_minus_p,) = ctx.saved_tensors
        return (q_minus_p * (grad * ctx.scale).to(q_minus_p.dtype)).view(ctx.shape), None, None


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
