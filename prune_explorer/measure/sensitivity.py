"""Sensitivity: which layers can lose more. Prune one group at a time over a sparsity sweep and measure.

Each group (one layer, one kind across blocks, or one block: :mod:`.sensitivity_groups`) is pruned alone, to
each sparsity of the sweep, with the chosen method (unstructured), and the damage is measured on fixed
held-out tokens (:class:`.tokens.TokenProtocol`): KL(dense‖pruned) of the next-token distributions (cheap,
smooth, zero when nothing changes) and the perplexity of the same tokens. The dense pass runs once; a group
whose first layer sits in block b reruns only blocks b..end from the stored hidden states
(:mod:`.replay`; the measuring loop: :mod:`.sensitivity_points`). The result also carries the instant
estimate (Σ_pruned w² ‖x_j‖², normalised per group), which is known before anything is measured, so a chart
shows where the cheap proxy holds.

Results are cached on disk per (model weights, method, sparsities, groups, tokens, calibration)
(:mod:`.sensitivity_cache`) and read back by later processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prune_explorer.measure import sensitivity_cache
from prune_explorer.measure.replay import dense_trace, head_delta_usable
from prune_explorer.measure.sensitivity_groups import (
    DEFAULT_SPARSITIES,
    check_sparsities,
    estimates,
    groups,
    method_results,
)
from prune_explorer.measure.sensitivity_points import measure_points, perplexity_of
from prune_explorer.measure.tokens import TokenProtocol
from prune_explorer.models.dense import DenseModel
from prune_explorer.models.digest import weights_digest
from prune_explorer.models.layers import DEFAULT_KINDS
from prune_explorer.progress import Progress
from prune_explorer.pruning.calibration import CalibrationBatch, resolve_calibration
from prune_explorer.state import PruningState

log = logging.getLogger(__name__)

# Share of the progress bar for the dense pass, the masks and the estimate; the points take the rest.
_SETUP = 0.1
FLOAT32 = "float32"
HEAD_DELTA = "dense logits + bfloat16 head delta"


@dataclass
class Sensitivity:
    """Damage of pruning each group alone, at each sparsity: measured (KL, perplexity) and estimated.

    Lists run over ``sparsities``; ``kl`` and ``ppl`` are in nats and plain perplexity on ``protocol``'s
    tokens; ``estimate`` is the share of Σ w² ‖x‖² the pruned weights held (see the module docstring);
    ``achieved`` the group's real sparsity; ``logits`` how the replayed variants' logits were computed
    (:data:`FLOAT32`, or :data:`HEAD_DELTA`: the dense logits plus the bfloat16 head delta of ``.replay``).
    """

    model: str
    method: str
    mode: str
    kinds: list[str]
    sparsities: list[float]
    groups: list[str]
    estimate: dict[str, list[float]]
    kl: dict[str, list[float]]
    ppl: dict[str, list[float]]
    achieved: dict[str, list[float]]
    dense_ppl: float
    protocol: dict
    calibration: dict
    replayed: bool
    seconds: dict = field(default_factory=dict)
    logits: str = FLOAT32
    cached: bool = False

    def fragile(self, sparsity: float) -> list[tuple[str, float]]:
        """(group, KL) at the sweep's ``sparsity``, most damaged first."""
        i = self.sparsities.index(sparsity)
        return sorted(((g, self.kl[g][i]) for g in self.groups), key=lambda gk: -gk[1])

    def curves(self) -> dict[str, list[tuple[float, float]]]:
        """{group: [(sparsity, KL), ...]}: the damage curves the budget allocation solves over."""
        return {g: list(zip(self.sparsities, self.kl[g], strict=True)) for g in self.groups}

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "cached"}

    @classmethod
    def from_dict(cls, data: dict) -> Sensitivity:
        """Rebuild from :meth:`to_dict`'s output.

        Raises:
            KeyError, TypeError, ValueError: a malformed dict.
        """
        result = cls(**data)
        n = len(result.sparsities)
        for table in (result.estimate, result.kl, result.ppl, result.achieved):
            if set(table) != set(result.groups) or any(len(v) != n for v in table.values()):
                raise ValueError("a table does not cover every group and sparsity")
        return result


def _logits_kind(dense: DenseModel) -> str:
    return HEAD_DELTA if head_delta_usable(dense.model) else FLOAT32


def _cache_key(
    dense: DenseModel, method: str, sparsities: list[float], mode: str, kinds, tokens: dict, calib
) -> dict:
    return {
        "logits": _logits_kind(dense),
        "model": weights_digest(dense),
        "method": method,
        "pattern": "unstructured",
        "sparsities": [round(s, 6) for s in sparsities],
        "mode": mode,
        "kinds": list(kinds),
        "tokens": tokens,
        "calibration": [list(calib.key[0]), calib.key[1]],
    }


def measure_sensitivity(
    dense: DenseModel,
    method: str = "magnitude",
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    *,
    mode: str = "layer",
    kinds: Sequence[str] = DEFAULT_KINDS,
    protocol: TokenProtocol | None = None,
    calibration: CalibrationBatch | str | None = None,
    cache: bool = True,
    cache_root: Path | str | None = None,
    progress: Progress = None,
) -> Sensitivity:
    """Prune each group alone to each sparsity and measure KL(dense‖pruned) and perplexity on held-out tokens.

    The dense model is never written: groups are pruned in a scratch :class:`PruningState`. ``progress`` is
    called between points; an exception it raises (a cancel) stops the sweep there and propagates: nothing
    is cached and the dense model is untouched.

    Args:
        method: a key of ``pruning.methods.METHODS``, run non-sequentially (each layer decided on the dense
            model's inputs, which is what it sees when pruned alone).
        sparsities: shares in [0, 1] to prune in each group (per layer; per row for Wanda).
        mode: "layer", "kind" or "block" (see :func:`.sensitivity_groups.groups`).
        kinds: layer kinds taking part.
        protocol: the measured tokens (default: 256 tokens of the model's evaluation text, one sequence).
        calibration: for the estimate and calibrated methods (default: the built-in calibration text).
        cache: read and write the on-disk cache.
        cache_root: the cache root (default: ``$PRUNE_EXPLORER_CACHE``, else ``~/.cache/prune_explorer``).
    Returns:
        :class:`Sensitivity` (``cached`` says whether it was read from disk).
    Raises:
        ValueError: unknown method, mode or kinds; a sparsity outside [0, 1]; a text too short.
    """
    start = time.perf_counter()
    values = check_sparsities(sparsities)
    protocol = protocol or TokenProtocol()
    found = groups(dense, mode, kinds)
    ids = protocol.ids(dense)
    tokens = protocol.describe(dense, ids)
    calib = resolve_calibration(dense, calibration)
    folder = sensitivity_cache.cache_dir(cache_root)
    key = _cache_key(dense, method, values, mode, kinds, tokens, calib)
    if cache and (result := _stored(key, folder)) is not None:
        if progress:
            progress(1.0)
        return result
    seconds: dict[str, float] = {}
    scratch = PruningState(dense)
    trace = dense_trace(scratch.model, ids, dense.layers)
    seconds["dense_pass"] = time.perf_counter() - start
    mark = time.perf_counter()
    setup = (lambda f: progress(_SETUP * f)) if progress else None
    results = method_results(dense, method, values, kinds, calib, setup)
    seconds["masks"] = time.perf_counter() - mark
    mark = time.perf_counter()
    estimate = estimates(dense, found, results, calib)
    seconds["estimate"] = time.perf_counter() - mark
    mark = time.perf_counter()
    kl, ppl, achieved = measure_points(scratch, trace, found, results, progress, _SETUP)
    seconds["measure"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - start
    result = Sensitivity(
        model=dense.name,
        method=method,
        mode=mode,
        kinds=list(kinds),
        sparsities=values,
        groups=[g.name for g in found],
        estimate=estimate,
        kl=kl,
        ppl=ppl,
        achieved=achieved,
        dense_ppl=perplexity_of(trace.nll),
        protocol=tokens,
        calibration={"source": calib.source, "n_sequences": calib.n_sequences, "seq_len": calib.seq_len},
        replayed=trace.replayable,
        seconds=seconds,
        logits=HEAD_DELTA if trace.head is not None else FLOAT32,
    )
    if cache:
        sensitivity_cache.save(key, result.to_dict(), folder)
    return result


def cached_sensitivity(
    dense: DenseModel,
    method: str = "magnitude",
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    *,
    mode: str = "layer",
    kinds: Sequence[str] = DEFAULT_KINDS,
    protocol: TokenProtocol | None = None,
    calibration: CalibrationBatch | str | None = None,
    cache_root: Path | str | None = None,
) -> Sensitivity | None:
    """What :func:`measure_sensitivity` with these arguments would read from the on-disk cache, or None when
    nothing is stored (nothing is measured).

    Raises:
        ValueError: as :func:`measure_sensitivity`.
    """
    values = check_sparsities(sparsities)
    groups(dense, mode, kinds)  # checks mode and kinds
    protocol = protocol or TokenProtocol()
    tokens = protocol.describe(dense, protocol.ids(dense))
    calib = resolve_calibration(dense, calibration)
    key = _cache_key(dense, method, values, mode, kinds, tokens, calib)
    return _stored(key, sensitivity_cache.cache_dir(cache_root))


def _stored(key: dict, folder: Path) -> Sensitivity | None:
    stored = sensitivity_cache.load(key, folder)
    if stored is None:
        return None
    try:
        result = Sensitivity.from_dict(stored)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring a malformed sensitivity cache entry in %s: %s", folder, exc)
        return None
    result.cached = True
    return result
