"""Per-layer allocation at equal total sparsity: held-out perplexity of uniform, OWL and the budget solver.

    python bench/allocation.py --model smollm2-135m
    python bench/allocation.py --model stories260K --targets 0.5 0.7

For Wanda and SparseGPT (each as its paper runs it: Wanda one dense pass, SparseGPT block by block) at 50%,
60% and 70% average sparsity over the attention and MLP weights (embeddings and LM head kept), weighted by
parameter count so every allocation prunes the same number of weights. Calibration: the model's built-in
calibration text; evaluation: the README's protocol, ``measure.evaluate.perplexity`` on
``texts.eval_text(info["text_set"])`` (disjoint from the calibration text). OWL: M = 5, λ = 0.08 (the paper's
defaults; Yin et al. 2024 report LLaMA-7B at 70% with Wanda: uniform 85.8, OWL 24.6 on WikiText-2).
The budget solver needs per-layer damage curves: by default KL(dense‖pruned) of each layer pruned alone with
the same method (``--curves-method M``: M's curves for every method) at 30/50/70/90%
(``measure.sensitivity.measure_sensitivity``, layer mode, its default tokens; its disk cache is used), or
``--curves FILE`` (JSON {layer: [[sparsity, damage], ...]}); where neither is available it is reported as
not run. The solver runs twice: unbounded, and with every layer within target ± 0.1 (``--band``; OWL's own
spread is ± 0.08). Goal: at 70% the best allocation has at least 20% lower perplexity than uniform with the
same method. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import time

import torch
from _common import emit, machine

from prune_explorer.measure.evaluate import perplexity
from prune_explorer.models.layers import DEFAULT_KINDS, select
from prune_explorer.models.loading import load_model
from prune_explorer.pruning import allocation, outliers
from prune_explorer.pruning.calibration import default_calibration
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.state import PruningState
from prune_explorer.texts import eval_text

METHODS = ("wanda", "sparsegpt")
GOAL_TARGET, GOAL_GAIN = 0.7, 0.2


def _curves(args, dense, method: str, calib, seconds: dict) -> tuple[dict | None, str]:
    """Per-layer damage curves for the budget solver, and where they came from (or why there are none)."""
    if args.curves:
        with open(args.curves) as f:
            return {name: [tuple(p) for p in points] for name, points in json.load(f).items()}, args.curves
    try:
        sensitivity = importlib.import_module("prune_explorer.measure.sensitivity")
    except ImportError as exc:
        return None, f"not run: no damage curves ({exc})"
    start = time.perf_counter()
    result = sensitivity.measure_sensitivity(dense, method, calibration=calib)
    took = time.perf_counter() - start
    if not result.cached:  # a second method reading the same curves must not overwrite their time
        seconds[f"sensitivity {method}"] = took
    curves = {name: list(zip(result.sparsities, result.kl[name], strict=True)) for name in result.groups}
    how = "cached" if result.cached else f"{took:.0f} s"
    return curves, f"KL per layer pruned alone with {method} at {result.sparsities} ({how})"


def _allocations(args, dense, layers, calib, curves, target: float) -> dict[str, dict[str, float]]:
    out = {
        "uniform": allocation.uniform(layers, target),
        "owl": allocation.owl(dense, layers, calib, target, m=args.m, lam=args.lam),
    }
    if curves is not None:
        sizes = allocation.layer_sizes(layers)
        out["budget"] = allocation.budget(curves, target, sizes)
        band = (max(0.0, target - args.band), min(1.0, target + args.band))
        out[f"budget±{args.band:g}"] = allocation.budget(curves, target, sizes, bounds=band)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="stories260K")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--m", type=float, default=outliers.OWL_M, help="OWL's outlier threshold M")
    parser.add_argument("--lam", type=float, default=allocation.OWL_LAMBDA, help="OWL's λ")
    parser.add_argument("--curves", default=None, help="JSON damage curves for the budget solver")
    parser.add_argument("--no-budget", action="store_true", help="skip the budget solver")
    parser.add_argument(
        "--curves-method", default=None, help="measure the budget's curves with this method for every method"
    )
    parser.add_argument("--band", type=float, default=0.1, help="budget solver's bounds: target ± band")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--window", type=int, default=None, help="perplexity window (default: model context)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    dense = load_model(args.model)
    load_s = time.perf_counter() - start
    text_set = dense.info.get("text_set", "stories")
    ids = torch.tensor(dense.tokenizer.encode(eval_text(text_set)))
    calib = default_calibration(dense)
    layers = select(dense.layers, DEFAULT_KINDS)
    sizes = allocation.layer_sizes(layers)
    state = PruningState(dense)
    print(
        f"model {args.model}: {len(layers)} layers, eval '{text_set}' {ids.numel()} tokens; calibration "
        f"{calib.source}: {calib.n_sequences} x {calib.seq_len}; {torch.get_num_threads()} torch threads",
        flush=True,
    )
    dense_ppl = perplexity(state.model, ids, window=args.window).ppl
    print(f"dense ppl {dense_ppl:.2f}", flush=True)
    print(
        f"{'method':<10} {'target':>6} {'allocation':<10} {'range':>13} {'sparsity':>8} {'ppl':>10} {'s':>7}"
    )
    ppl: dict[str, dict[str, dict[str, float]]] = {}
    spans: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, float] = {}
    budget_source = {}
    for method in args.methods:
        ppl[method] = {}
        if args.no_budget:
            curves, budget_source[method] = None, "not run: --no-budget"
        else:
            curves, budget_source[method] = _curves(args, dense, args.curves_method or method, calib, seconds)
        print(f"{method} budget curves: {budget_source[method]}", flush=True)
        for target in args.targets:
            key = f"{target:.2f}"
            ppl[method][key] = {}
            start = time.perf_counter()
            plans = _allocations(args, dense, layers, calib, curves, target)
            seconds[f"allocations {key}"] = time.perf_counter() - start
            for name, shares in plans.items():
                average = allocation.average_sparsity(shares, sizes)
                assert abs(average - target) < 1e-3, (name, average)
                spans.setdefault(name, {})[key] = [
                    round(min(shares.values()), 4),
                    round(max(shares.values()), 4),
                ]
                state.reset()
                start = time.perf_counter()
                result = prune_masks(
                    dense, method, "unstructured", target, calibration=calib, layer_sparsity=shares
                )
                result.apply(state)
                took = seconds[f"{method} {key} {name}"] = time.perf_counter() - start
                value = ppl[method][key][name] = perplexity(state.model, ids, window=args.window).ppl
                span = f"{min(shares.values()):.3f}-{max(shares.values()):.3f}"
                print(
                    f"{method:<10} {target:>6.0%} {name:<10} {span:>13} {result.info['sparsity']:>8.2%} "
                    f"{value:>10.2f} {took:>7.1f}",
                    flush=True,
                )
    goal = {}
    for method, rows in ppl.items():
        row = rows.get(f"{GOAL_TARGET:.2f}")
        if row:
            best = min((name for name in row if name != "uniform"), key=row.get)
            gain = 1.0 - row[best] / row["uniform"]
            goal[method] = {"best": best, "gain": round(gain, 4), "met": gain >= GOAL_GAIN}
    emit(
        {
            "bench": "allocation",
            "model": args.model,
            "dense_ppl": round(dense_ppl, 3),
            "ppl": {
                m: {t: {a: round(v, 3) for a, v in row.items()} for t, row in rows.items()}
                for m, rows in ppl.items()
            },
            "goal_70": goal,
            "budget_curves": budget_source,
            "owl": {"m": args.m, "lam": args.lam},
            "sparsity_range": spans,
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "calibration": {
                "source": calib.source,
                "n_sequences": calib.n_sequences,
                "seq_len": calib.seq_len,
            },
            "eval_tokens": int(ids.numel()),
            "load_s": round(load_s, 2),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
