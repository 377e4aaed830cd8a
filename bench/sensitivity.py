"""Per-layer sensitivity of a whole model: each layer pruned alone at 4 sparsities, KL and perplexity.

    python bench/sensitivity.py --model smollm2-135m
    python bench/sensitivity.py --model stories260K

For each method (magnitude, Wanda): ``measure_sensitivity`` in layer mode over the attention and MLP layers
(210 on SmolLM2-135M: 30 blocks x 7) at 30/50/70/90% unstructured, on 256 tokens of the model's held-out
evaluation text (one sequence), without the disk cache; then the whole-block mode (each block pruned alone).
Where the LM head is big and the CPU multiplies bfloat16 natively, the variants' logits are the dense logits
plus the head applied to their change in bfloat16 (``measure.replay.HeadDelta``); the bench then compares
that KL with float32 logits on the middle block's layers. Goals of issue 11 on this 2-core machine: the
layer sweep under 300 s per method, and under 90 s per block.
"Per block" is reported two ways: the layer sweep's time divided by the number of blocks (one block's 7
layers x 4 sparsities), and the whole-block mode's time (every block pruned alone, 4 sparsities).
Also the Spearman rank correlation between the instant estimate (Σ_pruned w² ‖x‖², normalised per layer) and
the measured KL: over every (layer, sparsity) point, and across layers at each sparsity (does the proxy rank
the layers?). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np
import torch
from _common import emit, machine

from prune_explorer.measure.replay import dense_trace, divergence, head_delta_usable, run_from
from prune_explorer.measure.sensitivity import measure_sensitivity
from prune_explorer.measure.tokens import TokenProtocol
from prune_explorer.models.layers import block_name
from prune_explorer.models.loading import load_model
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.state import PruningState

GOAL_S = 300.0
GOAL_BLOCK_S = 90.0


def rank(values) -> np.ndarray:
    """Ranks 0..n-1, ties given their average rank."""
    v = np.asarray(values, dtype=float)
    r = np.empty(len(v))
    r[v.argsort(kind="mergesort")] = np.arange(len(v))
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=r) / counts)[inverse]


def spearman(a, b) -> float:
    if len(a) < 2:
        return float("nan")
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


def correlations(result) -> dict:
    estimate = [result.estimate[g][i] for g in result.groups for i in range(len(result.sparsities))]
    kl = [result.kl[g][i] for g in result.groups for i in range(len(result.sparsities))]
    per_sparsity = {
        f"{s:g}": round(
            spearman(
                [result.estimate[g][i] for g in result.groups], [result.kl[g][i] for g in result.groups]
            ),
            3,
        )
        for i, s in enumerate(result.sparsities)
    }
    return {"all_points": round(spearman(estimate, kl), 3), "across_layers": per_sparsity}


def head_delta_agreement(dense, protocol: TokenProtocol, sparsities) -> dict:
    """KL of each layer of the middle block pruned alone (magnitude) with the logits in float32 and with the
    bfloat16 head delta (``measure.replay``): the largest and the median relative difference."""
    scratch = PruningState(dense)
    ids = protocol.ids(dense)
    exact = dense_trace(scratch.model, ids, dense.layers, head_delta=False)
    fast = dense_trace(scratch.model, ids, dense.layers, head_delta=True)
    if fast.head is None or not exact.replayable:
        return {"used": False}
    start = len(exact.blocks) // 2
    layers = [layer for layer in dense.layers if block_name(layer) == exact.blocks[start]]
    diffs, smallest = [], float("inf")
    for sparsity in sparsities:
        masks = prune_masks(dense, "magnitude", "unstructured", sparsity).masks
        for layer in layers:
            scratch.apply_masks({layer.name: masks[layer.name]})
            kl = divergence(exact, run_from(scratch.model, exact, start))[0]
            kl_fast = divergence(fast, run_from(scratch.model, fast, start))[0]
            scratch.reset([layer.name])
            diffs.append(abs(kl_fast / kl - 1) if kl > 0 else abs(kl_fast))
            smallest = min(smallest, kl)
    return {
        "used": True,
        "block": exact.blocks[start],
        "points": len(diffs),
        "smallest_kl": smallest,
        "max_rel_diff": round(max(diffs), 5),
        "median_rel_diff": round(float(np.median(diffs)), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="stories260K")
    parser.add_argument("--methods", nargs="+", default=["magnitude", "wanda"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--tokens", type=int, default=256, help="measured tokens of the evaluation text")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-blocks", action="store_true", help="skip the whole-block mode")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    dense = load_model(args.model)
    load_s = time.perf_counter() - start
    protocol = TokenProtocol(n_tokens=args.tokens)
    out: dict = {
        "bench": "sensitivity",
        "model": args.model,
        "load_s": round(load_s, 2),
        "sparsities": args.sparsities,
        "protocol": {k: v for k, v in protocol.describe(dense).items() if k != "ids_sha256"},
        "methods": {},
        "machine": machine(),
    }
    print(f"model {args.model} loaded in {load_s:.1f} s; {torch.get_num_threads()} torch threads", flush=True)
    for method in args.methods:
        load_before = os.getloadavg()[0]
        start, cpu = time.perf_counter(), time.process_time()
        result = measure_sensitivity(dense, method, args.sparsities, protocol=protocol, cache=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        n_blocks = len({g.rsplit(".", 2)[0] for g in result.groups})
        points = len(result.groups) * len(result.sparsities)
        row = {
            "layers": len(result.groups),
            "points": points,
            "seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "goal_s": GOAL_S,
            "met": wall < GOAL_S,
            "seconds_per_point": round(result.seconds["measure"] / points, 3),
            "seconds_per_block": round(wall / n_blocks, 1),
            "phases_s": {k: round(v, 2) for k, v in result.seconds.items()},
            "replayed": result.replayed,
            "logits": result.logits,
            "dense_ppl": round(result.dense_ppl, 3),
            "spearman_estimate_kl": correlations(result),
            "most_fragile": {
                f"{s:g}": [[g, round(kl, 4)] for g, kl in result.fragile(s)[:5]] for s in result.sparsities
            },
        }
        out["methods"][method] = row
        print(
            f"{method:<10} {row['layers']} layers x {len(args.sparsities)} sparsities: {wall:.1f} s "
            f"(goal {GOAL_S:.0f} s; {cpu:.0f} s CPU; load {load_before:.1f}), "
            f"{row['seconds_per_point']:.3f} s per point, {row['seconds_per_block']:.1f} s per block",
            flush=True,
        )
        print(f"{'':<10} Spearman(estimate, KL): {row['spearman_estimate_kl']}", flush=True)
        for s in result.sparsities:
            top = ", ".join(f"{g} {kl:.3f}" for g, kl in result.fragile(s)[:3])
            print(f"{'':<10} most fragile at {s:.0%}: {top}", flush=True)
        print("row " + json.dumps({method: row}), flush=True)
    for method in [] if args.no_blocks else args.methods:
        start = time.perf_counter()
        blocks = measure_sensitivity(
            dense, method, args.sparsities, mode="block", protocol=protocol, cache=False
        )
        row = out["methods"][method]
        row["block_mode_seconds"] = round(time.perf_counter() - start, 1)
        row["block_mode_met"] = row["block_mode_seconds"] < GOAL_BLOCK_S
        row["block_mode_spearman_estimate_kl"] = correlations(blocks)
        print(
            f"{method:<10} block mode, {len(blocks.groups)} blocks x {len(args.sparsities)} sparsities: "
            f"{row['block_mode_seconds']:.1f} s (goal {GOAL_BLOCK_S:.0f} s); "
            f"Spearman(estimate, KL) {row['block_mode_spearman_estimate_kl']}",
            flush=True,
        )
    if head_delta_usable(dense.model):
        out["head_delta_agreement"] = head_delta_agreement(dense, protocol, args.sparsities)
        print(f"bfloat16 head delta against float32 logits: {out['head_delta_agreement']}", flush=True)
    emit(out)


if __name__ == "__main__":
    main()
