"""How much memory does each user session cost? Peak RSS with 1, 2 and 4 sessions pruning at 50%.

    python bench/sessions.py --model smollm2-135m
    python bench/sessions.py --model stories260K

Each session count runs in a fresh subprocess, so every peak is clean. A child loads the dense model (read
once, shared), resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) so loading's own transient
peak is not counted, then opens N :class:`PruningState` sessions and prunes each one to 50% magnitude,
uniform, over the default layer kinds (attention and MLP). A session owns a copy of every layer it prunes,
so the marginal cost of a session should be about the bytes of the prunable weights. A first child with no
session warms the model cache and gives the RSS of the loaded model alone.

The last line is one JSON object: ``rss_mb`` (peak RSS per session count), ``per_session_mb`` (marginal RSS
per added session, the slope from 1 to 4 sessions), ``prunable_mb``, ``per_session_over_prunable``.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

from _common import ROOT, emit, machine

MB = 2**20
COUNTS = (1, 2, 4)
SPARSITY = 0.5


def proc_status() -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of this process, in bytes, from /proc/self/status."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak() -> bool:
    """Make VmHWM start again from the current RSS (Linux 4.0+); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(model: str, sessions: int) -> dict:
    import torch

    from prune_explorer.models.layers import select
    from prune_explorer.models.loading import load_model
    from prune_explorer.pruning.policies import MagnitudeSettings, apply_magnitude, magnitude_counts
    from prune_explorer.state import PruningState

    dense = load_model(model)
    gc.collect()
    loaded = proc_status()["VmRSS"]
    settings = MagnitudeSettings(sparsity=SPARSITY)
    magnitude_counts(dense, settings)  # the shared rankings: built once per process, not per session
    gc.collect()
    ranked = proc_status()["VmRSS"]
    clean_peak = reset_peak()
    states = [PruningState(dense) for _ in range(sessions)]
    for state in states:
        apply_magnitude(state, settings)
    gc.collect()
    status = proc_status()
    layers = select(dense.layers, settings.kinds)
    prunable = sum(layer.numel * dense.storage(layer.name).element_size() for layer in layers)
    return {
        "sessions": sessions,
        "loaded_bytes": loaded,
        "ranked_bytes": ranked,
        "peak_bytes": status["VmHWM"],
        "rss_bytes": status["VmRSS"],
        "private_bytes": sum(state.private_bytes() for state in states),
        "prunable_bytes": prunable,
        "peak_excludes_load": clean_peak,
        "threads": torch.get_num_threads(),
    }


def run_child(model: str, sessions: int) -> dict:
    cmd = [sys.executable, __file__, "--model", model, "--child", str(sessions)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child with {sessions} sessions failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="stories260K", help="stories260K or smollm2-135m")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.model, args.child)))
        return

    base = run_child(args.model, 0)  # also converts and caches the model on a first run
    runs = {n: run_child(args.model, n) for n in COUNTS}
    rss_mb = {str(n): runs[n]["peak_bytes"] / MB for n in COUNTS}
    per_session = (rss_mb[str(COUNTS[-1])] - rss_mb[str(COUNTS[0])]) / (COUNTS[-1] - COUNTS[0])
    prunable_mb = base["prunable_bytes"] / MB

    print(f"model {args.model}: one fresh process per row, each session pruned to {SPARSITY:.0%} magnitude")
    loaded_mb, ranked_mb = base["loaded_bytes"] / MB, base["ranked_bytes"] / MB
    print(f"RSS of the loaded model {loaded_mb:.1f} MB, with its shared rankings {ranked_mb:.1f} MB")
    print(f"prunable weights (default kinds) {prunable_mb:.1f} MB")
    print(f"{'sessions':>8} {'peak RSS MB':>12} {'RSS MB':>10} {'private MB':>11}")
    for n in COUNTS:
        r = runs[n]
        rss, private = r["rss_bytes"] / MB, r["private_bytes"] / MB
        print(f"{n:>8} {rss_mb[str(n)]:>12.1f} {rss:>10.1f} {private:>11.1f}")
    ratio = per_session / prunable_mb
    print(f"marginal RSS per session: {per_session:.1f} MB = {ratio:.2f} x the prunable bytes")
    emit(
        {
            "bench": "sessions",
            "model": args.model,
            "sparsity": SPARSITY,
            "rss_mb": {k: round(v, 1) for k, v in rss_mb.items()},
            "loaded_mb": round(base["loaded_bytes"] / MB, 1),
            "ranked_mb": round(base["ranked_bytes"] / MB, 1),
            "per_session_mb": round(per_session, 1),
            "prunable_mb": round(prunable_mb, 2),
            "per_session_over_prunable": round(ratio, 3),
            "peak_excludes_load": all(runs[n]["peak_excludes_load"] for n in COUNTS),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
