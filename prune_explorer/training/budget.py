"""What a training job costs before it starts, and how many may run at once in one process.

A job holds, beyond the shared dense model: the student's own copy of the trained weights, their gradients,
AdamW's two moments (4 + 4 + 8 bytes a weight), a bool mask and its float copy (1 + 4 bytes), and the
activations of one step (forward kept for backward, logits of student and teacher); the copies of the trained
weights and masks it keeps (its start, its result, and with ``keep_best`` its best checkpoint); and for each
watched layer (``training.histograms``) a start copy and a magnitude ranking. The estimate is deliberately
generous (:data:`MARGIN`); a job that does not fit is refused before any memory is taken.

Jobs are bounded per process by one module-level semaphore (:data:`MAX_JOBS`): on a 2-core machine two
training jobs would only slow each other and every browser session down.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import PrunableLayer, select
from prune_explorer.models.memory import available_memory_bytes
from prune_explorer.training.settings import TrainSettings

MAX_JOBS = 1
MARGIN = 1.25
# weights + grads + AdamW exp_avg + exp_avg_sq (float32) + a bool mask and its float copy
BYTES_PER_TRAINED_WEIGHT = 4 + 4 + 8 + 1 + 4
# one copy of the trained weights (float32) and their bool masks: the start, the result, the best checkpoint
BYTES_PER_COPY = 4 + 1
# a watched weight: its start copy and its ranking (int32 order, float32 sorted scores, uint8 bucket)
BYTES_PER_WATCHED_WEIGHT = 4 + 4 + 4 + 1

_slots = threading.BoundedSemaphore(MAX_JOBS)


class TrainingRefused(RuntimeError):
    """A job was not started: too little memory, or too many jobs already running."""


def _config(dense: DenseModel, key: str, default: int) -> int:
    value = getattr(getattr(dense.model, "config", None), key, None)
    return int(value) if isinstance(value, int) and value > 0 else default


def estimate_bytes(
    dense: DenseModel,
    layers: Sequence[PrunableLayer],
    batch_size: int,
    seq_len: int,
    hidden_loss: bool = False,
    watched: int = 0,
    keep_best: bool = False,
) -> int:
    """Bytes a job of ``batch_size`` × ``seq_len`` tokens training ``layers`` needs beyond the dense model;
    ``watched`` weights get |w| histograms, ``keep_best`` keeps a third copy of the trained layers."""
    trained = sum(layer.numel for layer in layers)
    hidden = _config(dense, "hidden_size", 256)
    inter = _config(dense, "intermediate_size", 4 * hidden)
    blocks = _config(dense, "num_hidden_layers", 4)
    heads = _config(dense, "num_attention_heads", 4)
    vocab = _config(dense, "vocab_size", 32000)
    tokens = batch_size * seq_len
    # Kept for backward per token and block: block inputs, q/k/v/o, norms, MLP in/out (~16 H), gate/up/act
    # (~6 I), attention probabilities (2 × heads × T, eager attention).
    activations = tokens * blocks * (16 * hidden + 6 * inter + 2 * heads * seq_len) * 4
    # Student logits, log-softmax and their grads (4), teacher logits and log-softmax (2).
    logits = 6 * tokens * vocab * 4
    features = 2 * (blocks + 1) * tokens * hidden * 4 if hidden_loss else 0
    copies = (3 if keep_best else 2) * trained * BYTES_PER_COPY
    state = trained * BYTES_PER_TRAINED_WEIGHT + copies + watched * BYTES_PER_WATCHED_WEIGHT
    return int(MARGIN * (state + activations + logits + features))


def job_bytes(dense: DenseModel, settings: TrainSettings, watch: Sequence[str] = ()) -> int:
    """:func:`estimate_bytes` of a run of ``settings`` whose layers ``watch`` get |w| histograms."""
    hidden = settings.recover == "distill" and settings.hidden_weight > 0
    layers = select(dense.layers, settings.kinds)
    watched = sum(dense.by_name[name].numel for name in dict.fromkeys(watch) if name in dense.by_name)
    return estimate_bytes(
        dense, layers, settings.batch_size, settings.seq_len, hidden, watched, settings.keep_best
    )


def check_job_memory(need: int, available: int | None = None) -> None:
    """Refuse a job whose estimate exceeds free memory.

    Raises:
        TrainingRefused: with both sizes and what to change.
    """
    free = available_memory_bytes() if available is None else available
    if need > free:
        raise TrainingRefused(
            f"this training job needs about {need / 2**30:.2f} GiB (trained weights, gradients, AdamW state "
            f"and one step's activations) but only {free / 2**30:.2f} GiB of memory is free; lower the batch "
            "size or sequence length, train fewer layer kinds, or free memory"
        )


@contextmanager
def job_slot() -> Iterator[None]:
    """Hold one of the process's :data:`MAX_JOBS` training slots for a job's duration.

    Raises:
        TrainingRefused: every slot is taken (the job is not queued).
    """
    if not _slots.acquire(blocking=False):
        raise TrainingRefused(
            f"{MAX_JOBS} training job{'s' if MAX_JOBS > 1 else ''} already running in this process (the most "
            "allowed); wait for it to finish or cancel it"
        )
    try:
        yield
    finally:
        _slots.release()
