"""The Train page through AppTest on stories260K: a few steps in the background, curves shown, the result
applied to the session (pruned weights exactly +0.0, every page on it) and Reset to dense bit-exact; bad
settings refused before anything starts; Cancel keeps the last whole step and the Use button names it; one
job per process; the |w| ridgeline of a watched layer, live and after the run, and its CSV."""

from __future__ import annotations

import json
import time

import pytest
import torch

from prune_explorer.models.layers import select
from prune_explorer.texts import eval_text
from tests.support.apptest import (
    TIMEOUT,
    captions,
    errors,
    figures,
    measured,
    metric,
    set_sparsity,
    start,
    trace_names,
)
from tests.support.downloads import download, numbers, record_downloads
from tests.support.models import saved_model

pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")
PAGE = "views/train.py"
# A run that takes seconds: 4 steps of 4 x 32 tokens, 2 curve points, 64 held-out tokens, 4 sampled texts.
QUICK = {
    "train_steps": 4,
    "train_points": 2,
    "train_eval_tokens": 64,
    "train_batch": 4,
    "train_seq_len": 32,
    "train_sampled": 1024,
    "train_seconds": 0,
}


@pytest.fixture(autouse=True)
def stop_jobs(monkeypatch):
    """Cancel and join every training thread a test started, passed or failed: the process has one slot."""
    from ui import train_job

    started = []
    run = train_job.TrainJob.run

    def recorded(self):
        started.append(self)
        run(self)

    monkeypatch.setattr(train_job.TrainJob, "run", recorded)
    yield
    for found in started:
        found.cancel()
        found.thread.join(TIMEOUT)


def train_page(at, **values):
    """Open the Train page with ``QUICK`` settings (and ``values``) in its widgets."""
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    for key, value in (QUICK | values).items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def job(at):
    return at.session_state["train_job"] if "train_job" in at.session_state else None


def press_start(at):
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    return at


def finished(at):
    """Wait for the session's training thread, then rerun as the page's polling fragment does."""
    running = job(at)
    assert running is not None, "no training job was started"
    running.thread.join(TIMEOUT)
    assert not running.thread.is_alive(), "the training run did not finish"
    at.run()
    assert not at.exception, at.exception
    return at


def session_bytes(at) -> dict[str, torch.Tensor]:
    """The session's current (out, in) weights of every prunable layer, as raw bytes."""
    state = at.session_state["pruning_state"]
    return {
        layer.name: state.weight(layer.name).detach().clone().view(torch.uint8)
        for layer in state.dense.layers
    }


def dense_bytes(at) -> dict[str, torch.Tensor]:
    state = at.session_state["pruning_state"]
    return {
        layer.name: layer.weight(state.dense.model).detach().clone().view(torch.uint8)
        for layer in state.dense.layers
    }


def job_masks(done) -> dict[str, torch.Tensor]:
    return done.result.masks


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_recovery_and_gradual_run_apply_and_reset_to_dense_exactly():
    at = start()
    dense_before = dense_bytes(at)
    set_sparsity(at, 70)
    pruned = session_bytes(at)
    one_shot_ppl = metric(at, "Pruned perplexity")
    train_page(at)
    (schedule,) = figures(at)
    assert trace_names(schedule) == ["masks (held fixed)"]
    assert schedule["data"][0]["y"] == [pytest.approx(70, abs=1)] * 2

    finished(press_start(at))
    done = job(at)
    assert done.result is not None and done.result.info["steps_done"] == 4
    assert "finished after 4 steps" in " ".join(s.value for s in at.success)
    names = [name for figure in figures(at) for name in trace_names(figure)]
    assert {"training loss", "held-out perplexity", "sparsity (%)", "dense"} <= set(names)
    assert any(name.endswith("one-shot, before recovery") for name in names)
    assert any(b.label == "Download CSV" for b in at.get("download_button"))
    assert same(session_bytes(at), pruned), "a finished run changes nothing until it is used"

    at.button(key="train_apply").click().run()
    assert not at.exception, at.exception
    assert "In use: the trained model" in " ".join(i.value for i in at.info)
    state = at.session_state["pruning_state"]
    result = done.result
    changed = False
    for name, weight in result.weights.items():
        now = state.weight(name).detach()
        keep = result.masks[name]
        assert torch.equal(state.mask(name), keep)
        assert torch.equal(now[~keep].view(torch.int32), torch.zeros_like(now[~keep]).view(torch.int32))
        assert torch.equal(now[keep], weight[keep])
        changed |= not torch.equal(now.view(torch.uint8), pruned[name])
    assert changed, "training moved no weight"

    measured(at.switch_page("views/prune.py").run())  # other pages run on the trained model
    assert metric(at, "Pruned perplexity") != one_shot_ppl, "the Prune page shows the model before training"
    at.button(key="sidebar_reset").click().run()
    assert not at.exception, at.exception
    assert same(session_bytes(at), dense_before), "Reset to dense is not bit-exact after training"
    assert same(dense_bytes(at), dense_before), "the shared dense model was written"

    assert done.settings.precision == "float32"  # stories260K's default: its matmuls are too small to gain
    train_page(
        at,
        train_schedule="gradual",
        train_target=50,
        train_dt=1,
        train_updates=2,
        train_t0=0,
        train_precision="bfloat16",
    )  # a gradual run beside the first, in mixed precision
    schedule = figures(at)[0]
    assert trace_names(schedule)[:2] == ["masks", "cubic s_t"]
    assert max(schedule["data"][0]["y"]) == pytest.approx(50)
    finished(press_start(at))
    done = job(at)
    assert done.settings.precision == "bfloat16"
    assert done.result.info["sparsity"] == pytest.approx(0.5, abs=0.01)
    comparison = figures(at)[-1]
    lines = [n for n in trace_names(comparison) if n.startswith("#")]
    assert len([n for n in lines if "one-shot, before" not in n]) == 2  # both runs, side by side
    at.button(key="train_apply").click().run()
    assert not at.exception, at.exception
    assert "In use: the trained model" in " ".join(i.value for i in at.info)
    state = at.session_state["pruning_state"]
    trained = [layer for layer in state.dense.layers if layer.name in job_masks(done)]
    zeros = sum(state.pruned_count(layer.name) for layer in trained)
    assert zeros / sum(layer.numel for layer in trained) == pytest.approx(0.5, abs=0.01)


def test_bad_settings_show_an_error_and_start_nothing(monkeypatch):
    at = start()
    train_page(at)  # one-shot recovery of a model with nothing pruned
    press_start(at)
    assert "Schedule: one-shot recovery" in errors(at) and "nothing is pruned" in errors(at)
    assert job(at) is None

    train_page(at, train_schedule="gradual", train_dt=7, train_updates=20)  # last update at 140 of 4 steps
    assert "Schedule: its last mask update" in " ".join(w.value for w in at.warning)  # drawn first
    press_start(at)
    assert "Schedule: its last mask update is at step 140" in errors(at)
    assert job(at) is None
    at.switch_page("views/prune.py").run()  # the controls keep their values while another page is shown
    at.switch_page(PAGE).run()
    assert at.number_input(key="train_steps").value == 4 and at.number_input(key="train_dt").value == 7

    set_sparsity(at, 50)
    train_page(at, train_schedule="oneshot", train_source="upload")
    at.file_uploader(key="train_upload").upload("short.txt", b"Too short.", "text/plain").run()
    press_start(at)
    assert "Training text: the training text has" in errors(at)
    assert "a shorter Sequence length" in errors(at) and "seq_len" not in errors(at)  # the widget's name
    assert job(at) is None

    from prune_explorer.training import budget

    monkeypatch.setattr(budget, "available_memory_bytes", lambda: 2**20)  # 1 MiB free
    train_page(at, train_source="sampled")
    press_start(at)
    assert "this training job needs about" in errors(at) and "of memory is free" in errors(at)
    assert job(at) is None


def wait_for_steps(running, steps: int = 1) -> None:
    deadline = time.monotonic() + TIMEOUT
    while running.steps_done < steps:
        assert not running.done, running.error
        assert time.monotonic() < deadline, "the training run made no step"
        time.sleep(0.05)


def test_cancel_keeps_the_last_step_and_a_second_job_is_refused():
    at = start()
    set_sparsity(at, 50)
    pruned = session_bytes(at)
    train_page(at, train_steps=100_000, train_points=0)
    press_start(at)
    running = job(at)
    wait_for_steps(running)
    at.run()
    assert at.button(key="train_start").disabled  # one run per session
    assert at.button(key="train_cancel")
    live = ridgeline(at, "train_live_hist")  # the |w| ridgeline grows while the run trains
    assert trace_names(live)[0].startswith("step 0 · 50% pruned")

    other = start()  # another session: the process's one training slot is taken
    set_sparsity(other, 50)
    train_page(other)
    press_start(other)
    assert "already running in this process" in errors(other)
    assert job(other) is None

    at.button(key="train_cancel").click().run()
    finished(at)
    result = running.result
    assert result.cancelled and 1 <= result.info["steps_done"] < 100_000
    assert same(session_bytes(at), pruned), "cancelling changed the session's model"
    assert "cancelled after" in " ".join(w.value for w in at.warning)
    steps, ppl = result.info["steps_done"], result.curve[-1].ppl  # the kept state is evaluated at its step
    assert result.curve[-1].step == steps and ppl == result.info["final_ppl"]
    assert at.button(key="train_apply").label == f"Use the state at step {steps} (perplexity {ppl:.2f})"
    at.button(key="train_discard").click().run()
    assert job(at) is None and same(session_bytes(at), pruned)
    assert figures(at)[-1]  # the cancelled run's curve stays on the comparison chart


def test_gradual_neurons_prune_whole_neurons_and_apply():
    from prune_explorer.pruning.units import model_unit_groups

    at = start()
    train_page(
        at, train_schedule="gradual", train_pattern="neurons", train_target=50, train_dt=1, train_updates=2,
        train_t0=0,
    )  # fmt: skip
    schedule = figures(at)[0]
    assert schedule["layout"]["yaxis"]["title"]["text"] == "neurons pruned per block (%)"
    finished(press_start(at))
    result = job(at).result
    assert result is not None and result.info["schedule_done"]
    verdict = " ".join(s.value for s in at.success)
    assert "finished after 4 steps" in verdict and "stopped before the schedule" not in verdict
    assert "of the trained layers' weights (50% of the neurons of each block;" in verdict
    at.button(key="train_apply").click().run()
    assert not at.exception, at.exception
    state = at.session_state["pruning_state"]
    groups = model_unit_groups(state.dense, state.dense.layers, "neurons")
    for group in groups:
        down = state.mask(group.col_layer)
        kept = down.any(0)
        assert int((~kept).sum()) == round(0.5 * group.n_units)  # half the block's neurons
        for name in group.row_layers:  # gate and up lose the same neurons' rows, whole
            assert torch.equal(state.mask(name).any(1), kept) and torch.equal(state.mask(name).all(1), kept)
    attention = [layer for layer in state.dense.layers if layer.kind.startswith("attn")]
    assert attention and all(bool(state.mask(layer.name).all()) for layer in attention)  # trained, not pruned


def test_compare_recovers_then_prunes_gradually_to_the_same_sparsity():
    at = start()
    train_page(at)
    at.button(key="train_compare").click().run()
    assert "Compare: nothing is pruned to recover" in errors(at) and job(at) is None

    set_sparsity(at, 50)
    train_page(at, train_eval_tokens=0)  # the whole held-out text, as the one-shot references are scored
    at.button(key="train_compare").click().run()
    assert not at.exception, at.exception
    first = job(at)
    assert first is not None and first.kind == "oneshot"
    assert "Next, when this run has finished (with this page open): gradual magnitude to 50.0%" in captions(
        at
    )
    finished(at)  # the page keeps the first run's curves and starts the queued one
    second = job(at)
    assert second is not first and second.kind == "gradual" and "train_queue" not in at.session_state
    assert second.settings.schedule.final_sparsity == pytest.approx(0.5, abs=0.005)
    for field in ("steps", "max_seconds", "batch_size", "seq_len", "recover", "lr", "eval_tokens"):
        assert getattr(second.settings, field) == getattr(first.settings, field), field
    finished(at)
    assert second.result.info["sparsity"] == pytest.approx(0.5, abs=0.005)
    comparison = figures(at)[-1]
    lines = [n for n in trace_names(comparison) if n.startswith("#")]
    assert [n for n in lines if "one-shot, before" not in n] == [f"#1 {first.label}", f"#2 {second.label}"]
    assert at.button(key="train_apply")  # the gradual run's result is the one to use
    # One-shot pruning at the same sparsity without training, dashed across the chart (stories260K: computed
    # at once), as the Compare page scores it.
    references = {t["name"]: t["y"][0] for t in comparison["data"] if t["name"].startswith("one-shot ")}
    assert list(references) == [f"one-shot {m} 50%, no training" for m in ("Magnitude", "Wanda", "SparseGPT")]
    from prune_explorer.measure.evaluate import perplexity
    from prune_explorer.pruning.prune import prune_masks
    from prune_explorer.state import PruningState

    state = at.session_state["pruning_state"]
    scratch = PruningState(state.dense)
    prune_masks(
        state.dense, "wanda", "unstructured", 0.5, calibration=at.session_state["calibration_batch"][0]
    ).apply(scratch)
    ids = torch.tensor(state.dense.tokenizer.encode(eval_text("stories")))
    assert references["one-shot Wanda 50%, no training"] == pytest.approx(
        perplexity(scratch.model, ids).ppl, rel=1e-6
    )
    assert references["one-shot Magnitude 50%, no training"] == pytest.approx(
        first.result.curve[0].ppl, rel=1e-6
    )


@pytest.mark.parametrize("how", ["cancel", "reset"])
def test_cancel_or_reset_drops_the_queued_gradual_run(how):
    at = start()
    set_sparsity(at, 50)
    train_page(at, train_steps=100_000, train_points=0)
    at.button(key="train_compare").click().run()
    first = job(at)
    wait_for_steps(first)
    at.run()
    at.button(key="train_cancel" if how == "cancel" else "sidebar_reset").click().run()
    assert not at.exception, at.exception
    assert "train_queue" not in at.session_state
    first.thread.join(TIMEOUT)
    at.run()
    assert first.cancel_requested and job(at) in (first, None)  # nothing queued started


def test_the_best_checkpoint_can_be_used_instead_of_the_final_state():
    at = start()
    set_sparsity(at, 10)
    # A rate far too high for a lightly pruned model: the held-out curve rises above its start.
    finished(press_start(train_page(at, train_lr=5e-2, train_points=4)))
    result = job(at).result
    ppl = {p.step: p.ppl for p in result.curve}
    best = result.best
    assert best is not None, f"the run's last point was its lowest: {ppl}"
    assert best.ppl == min(ppl.values()) < ppl[result.info["steps_done"]]
    verdict = " ".join(s.value for s in at.success)
    assert (
        f"lowest held-out perplexity at the final masks was {best.ppl:.2f}, after step {best.step}" in verdict
    )
    label = f"Use the best checkpoint: step {best.step} (perplexity {best.ppl:.2f})"
    assert at.button(key="train_apply_best").label == label

    at.button(key="train_apply_best").click().run()
    assert not at.exception, at.exception
    assert job(at) is None
    info = " ".join(i.value for i in at.info)
    assert f"best checkpoint at step {best.step}" in info and f"perplexity {best.ppl:.2f}" in info
    state = at.session_state["pruning_state"]
    for name, weight in best.state.weights.items():
        assert torch.equal(state.weight(name), weight) and torch.equal(
            state.mask(name), best.state.masks[name]
        )
    record = at.session_state["train_applied"].record
    assert (record.info["used_step"], record.info["used_ppl"]) == (best.step, best.ppl)


@pytest.mark.parametrize("how", ["reset", "switch"])
def test_a_reset_or_a_model_switch_while_training_cancels_the_run_with_a_note(how, tmp_path):
    at = start()
    set_sparsity(at, 50)
    train_page(at, train_steps=100_000, train_points=0)
    press_start(at)
    running = job(at)
    wait_for_steps(running)
    if how == "reset":
        at.button(key="sidebar_reset").click().run()
        note = "cancelled by Reset to dense"
    else:
        saved_model(tmp_path / "tiny", "llama")
        at.text_input(key="sidebar_source").input(str(tmp_path / "tiny"))
        at.button(key="sidebar_load").click().run()
        note = "the model changed"
    assert not at.exception, at.exception
    running.thread.join(TIMEOUT)
    assert not running.thread.is_alive() and running.cancel_requested
    assert job(at) is None and "train_applied" not in at.session_state
    assert note in " ".join(w.value for w in at.warning)
    state = at.session_state["pruning_state"]
    assert (state.dense is running.dense) == (how == "reset")
    assert all(not state.is_pruned(layer.name) for layer in state.dense.layers)  # nothing applied


def ridgeline(at, key: str) -> dict:
    """The |w| ridgeline chart drawn under ``key``, as the figure dict sent to the browser."""
    (chart,) = [c for c in at.main.get("plotly_chart") if c.proto.id.endswith(key)]
    return json.loads(chart.proto.spec)


def test_the_weights_over_training_ridgeline_and_its_csv(monkeypatch):
    payloads = record_downloads(monkeypatch)
    at = start()
    train_page(at, train_schedule="gradual", train_target=50, train_dt=1, train_updates=2, train_t0=0)
    layer = at.selectbox(key="train_hist_layer").value
    state = at.session_state["pruning_state"]
    assert state.dense.by_name[layer].kind.startswith("mlp")  # the default: the middle block's MLP layer
    finished(press_start(at))
    done = job(at)
    assert done.watch[0] == layer and len(done.watch) >= 2  # the picked layer and the defaults
    mine = [s for s in done.result.histograms if s.layer == layer]
    assert [s.step for s in mine] == [0, 1, 2, 3, 4]
    figure = ridgeline(at, "train_result_hist")
    assert trace_names(figure) == [f"step {s.step} · {s.pruned / s.numel:.0%} pruned" for s in mine]
    assert trace_names(figure)[-1].endswith("50% pruned")
    (button,) = [b for b in at.get("download_button") if b.key == "train_result_hist_csv"]
    name, header, rows = download(payloads, button)
    assert name == f"stories260K-weights-over-training-{layer}.csv"
    assert header[:6] == ["step", "layer", "abs_w_from", "abs_w_to", "weights", "pruned_weights"]
    numel = state.dense.by_name[layer].numel
    for snap in mine:
        at_step = [r for r in rows if int(r["step"]) == snap.step]
        assert numbers(at_step, "weights").tolist() == snap.kept.tolist()
        assert numbers(at_step, "weights").sum() + numbers(at_step, "pruned_weights").sum() == numel
        assert numbers(at_step, "pruned_weights").sum() == snap.pruned
    assert mine[-1].pruned == int((~done.result.masks[layer]).sum())  # the pruned count is the mask's zeros
    at_start = numbers([r for r in rows if r["step"] == "0"], "weights")
    from ui import data

    assert at_start.tolist() == data.magnitude_histogram(state.dense, layer, log_x=False).counts.tolist()

    trained = select(state.dense.layers)
    other = [n for n in (layer.name for layer in trained) if n not in done.watch][0]
    at.selectbox(key="train_hist_layer").set_value(other).run()  # not recorded by this run: it says so
    assert "the next run records the layer picked" in captions(at)


def test_the_use_button_names_a_cancelled_runs_state_and_refuses_a_diverged_one():
    from types import SimpleNamespace

    from prune_explorer.training.result import TrainResult
    from ui import train_view

    def job(**info):
        return SimpleNamespace(result=TrainResult({}, {}, info=info))

    assert train_view.apply_label(job(stopped="done", final_ppl=3.0)) == "Use the trained model"
    cancelled = job(stopped="cancelled", steps_done=7, final_ppl=3.14159)
    assert train_view.apply_label(cancelled) == "Use the state at step 7 (perplexity 3.14)"
    assert train_view.usable(cancelled)
    assert not train_view.usable(job(stopped="loss diverged", steps_done=3, final_ppl=float("nan")))


def test_one_shot_references_follow_the_latest_runs_pattern_and_skip_whole_units():
    from prune_explorer.training.result import CurvePoint
    from ui import train_compare
    from ui.train_job import Run

    def run(pattern, sparsity, eval_tokens=None):
        curve = (CurvePoint(0, None, 9.0, 0.0, 0.0, 0.0), CurvePoint(4, 1.0, 5.0, sparsity, 1.0, 0.0))
        return Run(1, "r", "gradual", "m", curve, 4.5, eval_tokens, "done", pattern)

    assert train_compare.reference_point([run("unstructured", 0.6003)]) == ("unstructured", 0.6)
    assert train_compare.reference_point([run("neurons", 0.36), run("2:4", 0.4988)]) == ("2:4", 0.5)
    assert train_compare.reference_point([run("unstructured", 0.6), run("neurons", 0.36)]) is None
    assert (
        train_compare.reference_point([run("unstructured", 0.6, eval_tokens=64)]) is None
    )  # part of the text
    assert train_compare.reference_point([run("unstructured", 0.0)]) is None  # nothing pruned
