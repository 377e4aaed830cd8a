"""How fast is a slider move? Ours (precomputed rankings) against torch.nn.utils.prune, plus forward latency.

    python bench/slider.py --model stories260K
    python bench/slider.py --model smollm2-135m

All numbers come from one run on this machine. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.utils.prune as tprune
from _common import ROOT, emit, machine
from torch import nn

from prune_explorer.execution.labels import DENSE, DENSE_ZEROS
from prune_explorer.measure.evaluate import perplexity
from prune_explorer.models.dense import context_length
from prune_explorer.models.layers import select
from prune_explorer.models.loading import load_model
from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude, magnitude_counts
from prune_explorer.pruning.ranking import layer_ranking, layer_rankings
from prune_explorer.state import PruningState
from prune_explorer.texts import eval_text
from prune_explorer.timing import forward_runner, time_interleaved

# A drag session: small and large steps, both directions.
MOVES = (0.50, 0.51, 0.55, 0.60, 0.70, 0.65, 0.64, 0.50, 0.40, 0.45, 0.30, 0.90, 0.20, 0.50, 0.52, 0.55)


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def time_slider(dense, policy: str) -> dict:
    """Median times of a slider move over a drag session.

    ``masks``: new bool masks for all prunable layers (counts from the precomputed rankings, then
    ``LayerRanking.mask``: one byte compared per weight), what ``l1_unstructured`` computes with a fresh
    top-k. ``apply``: the app's move, the session's working weights brought to the new masks (the masks stay
    implicit as counts; only the weights between the old and new cut are written).
    """
    state = PruningState(dense)
    apply_magnitude(
        state, MagnitudeSettings(sparsity=0.3, policy=policy)
    )  # first move builds the session copy
    masks_ms, apply_ms = [], []
    # The masks of the last move are rewritten in place, as a session keeping its masks would.
    kept = {
        layer.name: torch.empty(dense.storage(layer.name).shape, dtype=torch.bool) for layer in dense.layers
    }
    for s in MOVES:
        settings = MagnitudeSettings(sparsity=s, policy=policy)
        start = time.perf_counter()
        counts = magnitude_counts(dense, settings)
        for name, k in counts.items():
            if k:
                layer_ranking(dense, name).mask(k, kept[name].shape, out=kept[name])
        masks_ms.append(ms_since(start))
        start = time.perf_counter()
        state.apply_counts(magnitude_counts(dense, settings))
        apply_ms.append(ms_since(start))
    return {
        "masks": statistics.median(masks_ms),
        "apply": statistics.median(apply_ms),
        "apply_max": max(apply_ms),
    }


def time_torch_prune(dense, sparsity: float, repeats: int) -> tuple[float, float]:
    """torch.nn.utils.prune layer by layer, median ms: (l1_unstructured: mask + apply, compute_mask alone)."""
    layers = select(dense.layers)
    shells = []
    for layer in layers:
        shell = nn.Module()
        shell.weight = nn.Parameter(layer.weight(dense.model).detach().clone(), requires_grad=False)
        shells.append(shell)
    method = tprune.L1Unstructured(amount=sparsity)
    prune_runs, mask_runs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for shell in shells:
            method.compute_mask(shell.weight, default_mask=torch.ones_like(shell.weight))
        mask_runs.append(ms_since(start))
        start = time.perf_counter()
        for shell in shells:
            tprune.l1_unstructured(shell, "weight", amount=sparsity)
        prune_runs.append(ms_since(start))
        for shell in shells:
            tprune.remove(shell, "weight")
    return statistics.median(prune_runs), statistics.median(mask_runs)


def time_eval_overhead(model, ids: torch.Tensor) -> float:
    """Our perplexity evaluation against a plain transformers forward over the same windows."""
    window = context_length(model)
    chunks = [ids[i : i + window] for i in range(0, ids.numel() - 1, window)]

    def plain():
        with torch.inference_mode():
            for chunk in chunks:
                model(input_ids=chunk.view(1, -1))

    def timed(run) -> float:
        start = time.perf_counter()
        run()
        return ms_since(start)

    # This machine's speed drifts by tens of percent over seconds: compare each run with its neighbour
    # (order alternating, so neither side always goes first) and take the median of the ratios.
    timed(plain)  # warm-up
    ratios = []
    for i in range(9):
        if i % 2:
            theirs = timed(plain)
            ours = timed(lambda: perplexity(model, ids, window=window))
        else:
            ours = timed(lambda: perplexity(model, ids, window=window))
            theirs = timed(plain)
        ratios.append(ours / theirs)
    return statistics.median(ratios)


def time_rerun(model: str, moves=(30, 35, 40, 45, 50, 55)) -> float:
    """Median wall time of one whole app rerun after a slider move (AppTest, ``model`` loaded)."""
    from streamlit.testing.v1 import AppTest

    from tests.support.apptest import navigation_not_pages_folder

    with navigation_not_pages_folder():
        at = AppTest.from_file(str(ROOT / "explorer.py"), default_timeout=600).run()
        if model != at.selectbox(key="sidebar_model").value:
            at.selectbox(key="sidebar_model").set_value(model).run()
        assert not at.exception, at.exception
        at.slider(key="sidebar_sparsity").set_value(25).run()  # first move: the session's own copies
        runs = []
        for percent in moves:
            at.slider(key="sidebar_sparsity").set_value(percent)
            start = time.perf_counter()
            at.run()
            runs.append(ms_since(start))
            assert not at.exception, at.exception
    return statistics.median(runs)


def time_load_in_subprocess(model: str, cache_dir: str) -> float:
    code = (
        "import time, torch; from prune_explorer.models.loading import load_model; "
        f"s = time.perf_counter(); load_model({model!r}); print(time.perf_counter() - s)"
    )
    env = dict(os.environ, PRUNE_EXPLORER_CACHE=cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="stories260K")
    parser.add_argument("--tokens", type=int, default=128, help="tokens in the timed forward pass")
    parser.add_argument("--torch-repeats", type=int, default=3)
    parser.add_argument("--skip-load", action="store_true", help="skip the cold/warm load timing")
    args = parser.parse_args()

    result: dict = {"model": args.model, "machine": machine()}
    if not args.skip_load and args.model != "stories260K":
        with tempfile.TemporaryDirectory() as cache:
            result["cold_load_s"] = round(time_load_in_subprocess(args.model, cache), 2)
            result["warm_load_s"] = round(time_load_in_subprocess(args.model, cache), 2)

    start = time.perf_counter()
    dense = load_model(args.model)
    result["load_s"] = round(time.perf_counter() - start, 2)
    layers = select(dense.layers)
    result["prunable_params"] = sum(layer.numel for layer in layers)
    start = time.perf_counter()
    layer_rankings(dense, layers)
    result["precompute_s"] = round(time.perf_counter() - start, 2)

    uniform = time_slider(dense, "uniform")
    glob = time_slider(dense, "global")
    torch_prune, torch_masks = time_torch_prune(dense, 0.5, args.torch_repeats)
    result["slider_move_ms"] = round(uniform["masks"], 2)
    result["slider_apply_ms"] = round(uniform["apply"], 2)
    result["slider_apply_max_ms"] = round(uniform["apply_max"], 2)
    result["slider_move_global_ms"] = round(glob["masks"], 2)
    result["slider_apply_global_ms"] = round(glob["apply"], 2)
    result["torch_prune_ms"] = round(torch_prune, 2)
    result["torch_masks_ms"] = round(torch_masks, 2)
    result["speedup_vs_torch"] = round(torch_masks / uniform["masks"], 1)
    result["apply_speedup_vs_torch"] = round(torch_prune / uniform["apply"], 1)

    state = PruningState(dense)
    apply_magnitude(state, MagnitudeSettings(sparsity=0.5))
    ids = torch.tensor(dense.tokenizer.encode(eval_text(dense.info.get("text_set", "stories"))))
    x = ids[: args.tokens].view(1, -1)
    timed = time_interleaved(
        {"dense": forward_runner(dense.model, x), "pruned": forward_runner(state.model, x)},
        {"dense": DENSE, "pruned": DENSE_ZEROS},  # masked dense: the zeros are multiplied too
        warmup=3,
        repeats=15,
    )
    dense_t, pruned_t = timed["dense"], timed["pruned"]
    result["forward_tokens"] = int(x.shape[1])
    result["dense_forward_ms"] = round(dense_t.median_ms, 3)
    result["pruned_forward_ms"] = round(pruned_t.median_ms, 3)
    result["pruned_over_dense"] = round(pruned_t.median_ms / dense_t.median_ms, 3)
    result["kernel"] = pruned_t.kernel
    result["eval_overhead_ratio"] = round(time_eval_overhead(state.model, ids[: 8 * 128]), 3)
    del state
    result["rerun_ms"] = round(time_rerun(args.model), 1)

    print(f"model {args.model}: {result['prunable_params']:,} prunable weights")
    print(
        f"slider move (uniform, median of {len(MOVES)}): new masks {result['slider_move_ms']:.2f} ms; "
        f"weights written {result['slider_apply_ms']:.2f} ms (max {result['slider_apply_max_ms']:.2f}); "
        f"global policy {result['slider_move_global_ms']:.2f} / {result['slider_apply_global_ms']:.2f} ms"
    )
    print(
        f"torch.nn.utils.prune, layer by layer: compute_mask {result['torch_masks_ms']:.1f} ms "
        f"({result['speedup_vs_torch']}x ours), l1_unstructured {result['torch_prune_ms']:.1f} ms "
        f"({result['apply_speedup_vs_torch']}x ours)"
    )
    print(
        f"forward {x.shape[1]} tokens: dense {result['dense_forward_ms']:.2f} ms, "
        f"pruned 50% {result['pruned_forward_ms']:.2f} ms ({result['kernel']})"
    )
    print(f"one app rerun after a slider move (AppTest): {result['rerun_ms']:.0f} ms")
    emit(result)


if __name__ == "__main__":
    main()
