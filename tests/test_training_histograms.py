"""|w| histograms over training (``training.histograms``) on stories260K: counts add up to the layer, the
pruned count is the mask's zeros, step 0 is the start weights' histogram, snapshots stay bounded, and a
checkpoint-by-checkpoint reference agrees on what one-shot magnitude would have pruned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prune_explorer.models.layers import select
from prune_explorer.pruning.masks import magnitude_mask
from prune_explorer.training.checkpoints import load_checkpoint
from prune_explorer.training.data import sampled_data
from prune_explorer.training.histograms import MAX_SNAPSHOTS, bin_counts, default_edges, default_layers
from prune_explorer.training.job import TrainingCancelled, train
from prune_explorer.training.schedule import GradualSchedule
from prune_explorer.training.settings import TrainSettings
from prune_explorer.training.student import dense_start

SMALL = dict(batch_size=2, seq_len=32, eval_tokens=64, lr=1e-2)


@pytest.fixture(scope="module")
def data(stories):
    return sampled_data(stories, tokens=8 * 64, seq_len=32, seed=1)


def _gradual(steps: int, **kwargs) -> TrainSettings:
    schedule = GradualSchedule(final_sparsity=0.6, start_step=1, updates=3, every=2)
    return TrainSettings(steps=steps, schedule=schedule, **SMALL, **kwargs)


def test_default_layers_are_one_attention_and_one_mlp_layer(stories):
    layers = select(stories.layers)
    chosen = default_layers(layers)
    assert [layer.kind[:3] for layer in chosen] == ["att", "mlp"]
    assert len({layer.block for layer in chosen}) == 1


def test_bins_follow_the_apps_convention_tails_in_the_end_bins():
    edges = np.array([0.1, 0.2, 0.3, 0.4])
    values = torch.tensor([0.0, 0.1, 0.15, 0.2, 0.25, 0.4, 0.9])
    assert bin_counts(values, edges).tolist() == [4, 1, 2]  # (..0.2], (0.2, 0.3], (0.3, ..)


def test_counts_add_up_and_pruned_is_the_masks_zero_count(stories, data, tmp_path, one_thread):
    settings = _gradual(9, checkpoint_dir=str(tmp_path), checkpoint_every=1)
    result = train(stories, data, settings)
    layers = default_layers(select(stories.layers))
    steps = sorted({s.step for s in result.histograms})
    assert steps == list(range(10)) and len(result.histograms) == 10 * len(layers)
    start = dense_start(stories, layers)
    by_step = {}
    for path in sorted(tmp_path.glob("*.safetensors")):
        checkpoint, step = load_checkpoint(path)
        by_step[step] = checkpoint
    by_step[0] = start
    for snap in result.histograms:
        layer = stories.by_name[snap.layer]
        weights, keep = by_step[snap.step].weights[snap.layer], by_step[snap.step].masks[snap.layer]
        assert snap.numel == layer.numel and snap.kept.sum() + snap.pruned == layer.numel
        assert snap.pruned == int((~keep).sum()) == int((weights == 0).sum())
        assert np.array_equal(snap.kept, bin_counts(weights[keep].abs(), snap.edges))
        assert np.array_equal(
            snap.pruned_bins, bin_counts(start.weights[snap.layer][~keep].abs(), snap.edges)
        )
        one_shot = magnitude_mask(start.weights[snap.layer], snap.pruned / layer.numel)
        assert snap.rescued == int((keep & ~one_shot).sum())
    first = [s for s in result.histograms if s.step == 0]
    for snap in first:  # step 0: the start weights, nothing pruned, nothing moved
        w = start.weights[snap.layer]
        assert np.array_equal(snap.edges, default_edges(w))
        counts, _ = np.histogram(w.abs().numpy(), bins=snap.edges)  # the same bins, numpy's way
        assert snap.kept.sum() == counts.sum() and snap.pruned == 0 and snap.drift == 0.0
        assert np.abs(snap.kept - counts).sum() <= 2  # numpy's bins are closed on the left, ours on the right
    last = [s for s in result.histograms if s.step == 9]
    assert all(s.pruned / s.numel == pytest.approx(0.6, abs=0.01) and s.drift > 0 for s in last)
    assert result.info["histogram_seconds"] > 0  # timed apart (stories260K's steps are too short to compare)


def test_snapshots_are_bounded_chosen_layers_and_edges_and_a_cancel_keeps_the_stop(stories, data, one_thread):
    name = select(stories.layers)[-1].name
    edges = np.geomspace(1e-4, 1.0, 31)
    seen, calls = [], []

    def progress(share):
        calls.append(share)
        if len(calls) == 50:
            raise TrainingCancelled

    settings = TrainSettings(steps=400, **SMALL)
    result = train(stories, data, settings, progress=progress, watch=[name], watch_edges={name: edges},
                   on_snapshot=seen.append)  # fmt: skip
    steps = [s.step for s in result.histograms]
    assert result.cancelled and steps == [0, 22, 44, 50]  # every ceil(400 / 19) steps, and the stop
    assert [new[0].step for new in seen] == [0, 22, 44]
    assert {s.layer for s in result.histograms} == {name}
    assert all(
        s.edges is result.histograms[0].edges and np.array_equal(s.edges, edges) for s in result.histograms
    )
    full = train(stories, data, TrainSettings(steps=100, **SMALL), watch=[name])
    steps = [s.step for s in full.histograms]
    assert len(steps) <= MAX_SNAPSHOTS + 1 and steps[0] == 0 and steps[-1] == 100
    assert train(stories, data, TrainSettings(steps=2, **SMALL), watch=[]).histograms == []
    with pytest.raises(ValueError, match="watch: .* are not trained layers"):
        train(stories, data, TrainSettings(steps=1, kinds=("mlp_up",), **SMALL), watch=[name])
