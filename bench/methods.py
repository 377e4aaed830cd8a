"""Magnitude against activation-aware pruning: held-out perplexity and wall time per method.

    python bench/methods.py --model stories260K
    python bench/methods.py --model smollm2-135m

Runs dense, magnitude, Wanda and SparseGPT at 50% unstructured and at 2:4 on the attention and MLP weights
(embeddings and LM head kept), calibrated on the model's built-in calibration text and evaluated on its
held-out evaluation text (``texts.eval_text(info["text_set"])``; the two share no sentence). Published
reference, LLaMA-2-7B on WikiText-2 (Wanda paper, table 3): dense 5.12; 50% magnitude 14.89, SparseGPT 6.51,
Wanda 6.42; 2:4 magnitude 54.59, SparseGPT 10.17, Wanda 11.02. Seconds per method are the pruning only
(calibration included, perplexity excluded). On a CPU shared with other work ``--threads 1`` is much faster
for SparseGPT's column loop (small ops; OpenMP threads wait on busy cores). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
from _common import emit, machine

from prune_explorer.measure.evaluate import perplexity
from prune_explorer.models.loading import load_model
from prune_explorer.pruning.calibration import default_calibration
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.state import PruningState
from prune_explorer.texts import eval_text

# (row name, method, sequential): Wanda runs both ways, one dense pass (the app's default) and block by block
# on the already-pruned earlier blocks (as the authors' code); None: the method's own default.
METHODS = (
    ("magnitude", "magnitude", None),
    ("wanda", "wanda", False),
    ("wanda_sequential", "wanda", True),
    ("sparsegpt", "sparsegpt", None),
)
PATTERNS = ("unstructured", "2:4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="stories260K")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per calibration sequence")
    parser.add_argument(
        "--n-sequences",
        type=int,
        default=None,
        help="calibration sequences (default: as many as the built-in text holds, at most 128)",
    )
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
    calib = default_calibration(dense, seq_len=args.seq_len, n_sequences=args.n_sequences)
    state = PruningState(dense)

    print(
        f"model {args.model}: eval '{text_set}' {ids.numel()} tokens; calibration {calib.source}: "
        f"{calib.n_sequences} x {calib.seq_len} = {calib.n_tokens} of its {calib.text_tokens} tokens; "
        f"{torch.get_num_threads()} torch threads",
        flush=True,
    )
    print(f"{'method':<16} {'pattern':<13} {'sparsity':>8} {'ppl':>10} {'seconds':>8}", flush=True)
    start = time.perf_counter()
    dense_ppl = perplexity(state.model, ids, window=args.window).ppl
    seconds = {"dense_eval": time.perf_counter() - start}
    print(f"{'dense':<16} {'-':<13} {0.0:>8.1%} {dense_ppl:>10.2f} {seconds['dense_eval']:>8.2f}", flush=True)
    ppl: dict[str, dict[str, float]] = {}
    sparsity: dict[str, dict[str, float]] = {}
    for pattern in PATTERNS:
        ppl[pattern] = {"dense": dense_ppl}
        sparsity[pattern] = {}
        for method, name, sequential in METHODS:
            state.reset()
            dense.cache.clear()  # each method pays for its own calibration pass
            start = time.perf_counter()
            result = prune_masks(
                dense, name, pattern, args.sparsity, calibration=calib, sequential=sequential
            )
            result.apply(state)
            took = seconds[f"{method} {pattern}"] = time.perf_counter() - start
            ppl[pattern][method] = perplexity(state.model, ids, window=args.window).ppl
            sparsity[pattern][method] = result.info["sparsity"]
            for message in result.info["messages"]:
                if "ignored" not in message:
                    logging.warning("%s %s: %s", method, pattern, message)
            print(
                f"{method:<16} {pattern:<13} {sparsity[pattern][method]:>8.1%} {ppl[pattern][method]:>10.2f} "
                f"{took:>8.2f}",
                flush=True,
            )
    emit(
        {
            "bench": "methods",
            "model": args.model,
            "ppl": {p: {m: round(v, 3) for m, v in row.items()} for p, row in ppl.items()},
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "sparsity": {p: {m: round(v, 4) for m, v in row.items()} for p, row in sparsity.items()},
            "calibration": {
                "source": calib.source,
                "n_sequences": calib.n_sequences,
                "seq_len": calib.seq_len,
                "tokens": calib.n_tokens,
            },
            "eval_tokens": int(ids.numel()),
            "load_s": round(load_s, 2),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
