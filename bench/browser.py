"""Live in the browser: how long the whole page takes to show what a user asked for.

    python bench/browser.py                               # floor, stories260K (with switches), SmolLM2
    python bench/browser.py --model stories260K --steps 10 --burst 8
    python bench/browser.py --model smollm2-135m --skip-floor --skip-switches --skip-layers

Playwright drives Debian's chromium (never a downloaded browser) against ``streamlit run app.py`` on a free
port, and against ``bench/floor_app.py`` (one slider, one text, one Plotly histogram: what Streamlit itself
costs). Measured, in order: the floor (first view, single steps, bursts); the app's first view on a fresh
server (stories260K loads); single steps of "Global sparsity" (ArrowRight, from 40%) on the Prune page;
bursts of rapid steps; single steps on the Layers page (its |w| histogram and threshold); policy, method and
pattern switches; the switch to SmolLM2 (its converted cache present) and the same steps there.

Timestamps are the page's ``performance.now()``. Key presses and clicks are stamped by capture listeners in
the page; websocket frames come from Chrome's DevTools protocol, put on the page's clock through the
handshake's wall time (``clock_lag_ms`` in the JSON checks it: the page's own message listener against
Chrome's stamp of the same frame, about 0 ms; Chrome stamps a frame when the page's main thread takes it,
so a page busy drawing delays the stamp too). Frames are decoded with Streamlit's protobufs: a rerun request
carries the slider value it asks for, a run begins with ``new_session`` and ends with ``script_finished``
(a run stopped for a newer request sends no ``script_finished``, or one saying FINISHED_EARLY_FOR_RERUN:
interrupted runs are the runs started less those that finished otherwise).

A step is *settled* when all of these hold:

1. the last rerun request since the action carries the value asked for (steps and bursts), and a
   ``script_finished`` came after it with no run started since;
2. the app says nothing runs: ``stApp[data-test-script-state] == "notRunning"``, no running icon in the
   status widget, no element container with ``data-stale="true"``;
3. the measurement's checks hold (below);
4. the DOM has not changed for ``--quiet-ms`` (150 ms; a MutationObserver over the whole document).

The settled time is the last DOM mutation (not last + quiet). *Outputs* is when the checks began to hold for
good: the start of their last true spell before any later run (the app reruns once its background
measurements are in, which marks elements stale again), or, when they already held before the answering
run started (a fast run reaches the DOM in one React commit, nothing ever shown stale), the first DOM change
after it started. Every action waits first until the page is idle: no run, no background measurement.
The checks, each on elements re-sent by the current run (``data-stale="false"``; Streamlit marks every
element stale from the rerun request until the run sends it again): for a step, the slider and the sidebar
summary show the new value ("N of M weights are zero", N within one weight per layer of value × M),
and the pruned text, the next-token chart and the KL metric (Prune page) or the histogram's threshold line
and its caption, matching the value (Layers page). For a switch, the cheap outputs: pruned text and sidebar
summary (and for SmolLM2 the "Active model" caption naming it). The pruned text counts once the current
run shows it, growing (``pe-gen-growing``: its first tokens, drawn with the next-token chart) or whole
(``pe-gen-pruned``); the whole text is in by *settled*.

Breakdown (medians, ms): client = action → request sent; run = request → ``new_session``; 1st el =
request → first element; out sv = request → the last frame received before the outputs showed; finish =
request → ``script_finished`` (server script run and transfer); draw = ``script_finished`` → settled. Also
bytes received, requests sent, runs started and interrupted, and the longest silences between two received
frames, named by the frames around them and summed over repeats (a loop's progress updates): where the
server computes.

Bursts (``--burst`` ArrowRight presses ``--gap-ms`` apart) are timed from the last press and list their
events (presses, requests with their values, runs started and finished).

Timings are never asserted; prints a table, then one JSON line. Screenshots go to ``artifacts/bench/``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from _common import ROOT, emit, machine
from browser_page import CHEAP, FLOOR_STEP, LAYERS_STEP, PRUNE_STEP
from browser_probe import ARTIFACTS, Probe, Trial
from browser_report import fmt, goals, summarise, table

from tests.support.browser import CHROMIUM_ARGS, streamlit_server

APP = ROOT / "app.py"
FLOOR = ROOT / "bench" / "floor_app.py"
STORIES = "stories260K"
SMOLLM2 = "smollm2-135m"
START_PERCENT = 40
READY_S: dict[str, float] = {}  # script name → seconds from `streamlit run` to a healthy server
TRAINING: dict = {}  # what the other session's Train page showed around the steps measured meanwhile

# ----- server


@contextmanager
def serve(script: Path, log_name: str, threads: int | None):
    """``streamlit run script`` on a free port, as the e2e tests start it; yields the URL once healthy.

    The seconds from the command to a healthy server go into :data:`READY_S` (the app warms up before it
    answers: a visitor who comes at once waits for that too, so the report states it beside the first view).
    """
    env = {"OMP_NUM_THREADS": str(threads)} if threads else None
    began = time.perf_counter()
    with streamlit_server(script, ARTIFACTS / log_name, env) as url:
        READY_S[script.name] = round(time.perf_counter() - began, 2)
        yield url


# ----- measurements


def run_floor(browser, args, clocks: dict) -> dict:
    """The floor app on its own fresh server: first view, single steps, bursts."""
    with serve(FLOOR, "streamlit-floor.log", args.threads) as url:
        spec = {"expr": FLOOR_STEP, "params": {"value": 0}}
        probe = Probe(browser, url, spec, args.quiet_ms, args.timeout_s)
        result = {"first view": [probe.open()]}
        probe.move_to(START_PERCENT - 1, FLOOR_STEP)
        result["step"] = steps(probe, args.steps, FLOOR_STEP)
        result["burst"] = bursts(probe, args, FLOOR_STEP)
        probe.screenshot("floor.png")
        clocks["floor"] = probe.clock_lag()
        probe.page.close()
    return result


def steps(probe: Probe, count: int, expr: str, pause_s: float = 0.0) -> list[Trial]:
    """One warm-up ArrowRight, then ``count`` measured ones, each waited until settled; ``pause_s``: a
    user reading the page for that long before each press (the app's look-ahead may have the next step)."""
    probe.press("ArrowRight", expr, value_after(probe, 1))
    trials = []
    for _ in range(count):
        time.sleep(pause_s)
        trial = probe.press("ArrowRight", expr, value_after(probe, 1))
        trials.append(trial)
        print(f"  step to {trial.value}%: outputs {fmt(trial.outputs)} ms, settled {fmt(trial.settled)} ms")
    return trials


def bursts(probe: Probe, args, expr: str) -> list[Trial]:
    """``--bursts`` bursts of ``--burst`` presses, one after the other (each waited until settled)."""
    trials = []
    for _ in range(args.bursts):
        trial = probe.burst(args.burst, args.gap_ms, expr, value_after(probe, args.burst))
        trials.append(trial)
        print(
            f"  burst to {trial.value}%: outputs {fmt(trial.outputs)} ms, settled {fmt(trial.settled)} ms, "
            f"{trial.requests} requests, {trial.runs} runs, {trial.interrupted} interrupted"
        )
    return trials


def value_after(probe: Probe, presses: int) -> int:
    return min(100, int(probe.slider().input_value()) + presses)


def run_model_steps(probe: Probe, model: str, args, out: dict) -> None:
    """Steps and bursts on the Prune page, then steps on the Layers page, back to Prune at 40%."""
    probe.move_to(START_PERCENT - 1, PRUNE_STEP)
    print(f"{model}: steps on the Prune page")
    out[f"{model} step (Prune page)"] = steps(probe, args.steps, PRUNE_STEP)
    probe.screenshot(f"{model}-prune.png")
    if args.read_s > 0:
        print(f"{model}: steps on the Prune page, {args.read_s:g} s of reading before each")
        out[f"{model} step after reading (Prune page)"] = steps(probe, args.steps, PRUNE_STEP, args.read_s)
    print(f"{model}: {args.bursts} bursts of {args.burst}")
    out[f"{model} burst"] = bursts(probe, args, PRUNE_STEP)
    if not args.skip_layers:
        out[f"{model} open Layers page"] = [probe.go("Layers")]
        print(f"{model}: steps on the Layers page")
        out[f"{model} step (Layers page)"] = steps(probe, args.steps, LAYERS_STEP)
        probe.screenshot(f"{model}-layers.png")
        out[f"{model} open Prune page"] = [probe.go("Prune")]
    probe.move_to(START_PERCENT, PRUNE_STEP)


SWITCHES = (
    ("policy→global", "sidebar_policy", "One global |w| threshold"),
    ("policy→uniform", "sidebar_policy", "Same sparsity in every layer"),
    ("method→random", "sidebar_method", "Random (baseline)"),
    ("method→wanda", "sidebar_method", "Wanda |w|·‖x‖"),
    ("method→magnitude", "sidebar_method", "Magnitude |w|"),
    ("pattern→2:4", "sidebar_pattern", "2:4 (keep 2 of every 4)"),
    ("pattern→unstructured", "sidebar_pattern", "Unstructured"),
)


def run_while_training(browser, url: str, probe: Probe, model: str, args, out: dict) -> None:
    """Another user starts a training run (gradual pruning from dense, the Train page's other defaults: a
    60-s budget, distillation, one thread) and watches it; meanwhile the same single steps as before on
    this session's Prune page. What the trainer's page showed before and after the steps goes to
    ``TRAINING`` (the steps count only while it trained)."""
    trainer = Probe(browser, url.rstrip("/") + "/train", None, args.quiet_ms, args.timeout_s)
    trainer.page.goto(trainer.url)
    start = trainer.page.get_by_role("button", name="Start training")
    start.wait_for(timeout=args.timeout_s * 1000)
    trainer.page.get_by_text("Gradual from dense", exact=True).click()  # a fresh session prunes nothing
    trainer.wait_quiet()
    start.click()
    progress = trainer.page.get_by_text(re.compile(r"^Training .*: step \d+/\d+"))
    progress.first.wait_for(timeout=args.timeout_s * 1000)  # past sampling: the optimizer steps run
    before = progress.first.inner_text()
    print(f"{model}: steps on the Prune page while another session trains ({before})")
    out[f"{model} step while another session trains"] = steps(probe, args.steps, PRUNE_STEP)
    still = progress.count() > 0
    after = progress.first.inner_text() if still else "finished before the last step"
    cancel = trainer.page.get_by_role("button", name="Cancel")
    if cancel.count():
        cancel.first.click()
    trainer.page.close()
    print(f"  trainer: {before} → {after}")
    TRAINING.update(before=before, after=after, trained_throughout=still)


def run_switches(probe: Probe, out: dict) -> None:
    """Each switch once, in order (the policy switch is the first use of the global ranking)."""
    for name, key, option in SWITCHES:
        trial = probe.choose(key, option)
        out[f"switch {name}"] = [trial]
        print(f"  switch {name}: outputs {fmt(trial.outputs)} ms, settled {fmt(trial.settled)} ms")


def run_app(browser, args, clocks: dict) -> dict:
    """The app on a fresh server: first view (stories260K), then what ``--model`` asks for."""
    out: dict[str, list[Trial]] = {}
    with serve(APP, "streamlit-app.log", args.threads) as url:
        spec = {"expr": PRUNE_STEP, "params": {"value": 0}}
        probe = Probe(browser, url, spec, args.quiet_ms, args.timeout_s)
        out[f"{STORIES} first view"] = [probe.open()]
        print(f"{STORIES}: first view {fmt(out[f'{STORIES} first view'][0].settled)} ms")
        # What a second user of the same server sees: imports and the model load are done.
        second = Probe(browser, url, spec, args.quiet_ms, args.timeout_s)
        warm = out[f"{STORIES} new session, warm server"] = [second.open()]
        second.page.close()
        print(f"{STORIES}: new session, warm server {fmt(warm[0].settled)} ms")
        if args.model in (STORIES, "both"):
            run_model_steps(probe, STORIES, args, out)
            if not args.skip_training:
                run_while_training(browser, url, probe, STORIES, args, out)
            if not args.skip_switches:
                run_switches(probe, out)
        if args.model in (SMOLLM2, "both"):
            expr = f"b.captionFresh('Active model: {SMOLLM2}') && {CHEAP} && b.summaryAt(0)"
            out[f"switch to {SMOLLM2}"] = [probe.choose("sidebar_model", SMOLLM2, expr)]
            print(f"switch to {SMOLLM2}: settled {fmt(out[f'switch to {SMOLLM2}'][0].settled)} ms")
            run_model_steps(probe, SMOLLM2, args, out)
        clocks["app"] = probe.clock_lag()
        probe.page.close()
    return out


def while_training_ratio(rows: dict[str, dict]) -> dict:
    """Median outputs of a step while another session trains over the same steps without (one run)."""
    alone = rows.get(f"{STORIES} step (Prune page)")
    busy = rows.get(f"{STORIES} step while another session trains")
    if not alone or not busy or not alone["outputs_ms"] or not busy["outputs_ms"]:
        return {}
    return {"outputs_ratio": round(busy["outputs_ms"]["median"] / alone["outputs_ms"]["median"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=(STORIES, SMOLLM2, "both"), default="both")
    parser.add_argument("--steps", type=int, default=10, help="measured single steps per page")
    parser.add_argument("--burst", type=int, default=8, help="ArrowRight presses in the burst")
    parser.add_argument("--bursts", type=int, default=3, help="bursts per measurement")
    parser.add_argument("--gap-ms", type=float, default=30.0, help="time between burst presses")
    parser.add_argument(
        "--read-s", type=float, default=4.0, help="pause before each 'step after reading' (0: none measured)"
    )
    parser.add_argument("--quiet-ms", type=float, default=150.0, help="DOM quiet period that ends a step")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="longest wait for one action")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the servers")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--floor-only", action="store_true", help="only the floor app (a check of the bench)")
    parser.add_argument("--skip-switches", action="store_true", help="no policy/method/pattern switches")
    parser.add_argument("--skip-layers", action="store_true", help="no steps on the Layers page")
    parser.add_argument(
        "--skip-training", action="store_true", help="no steps while another session trains (stories260K)"
    )
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("Debian's chromium is not installed (apt install chromium); no browser is downloaded")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    if load_before[0] > 1.0:
        print(
            f"warning: load average {load_before[0]:.1f} on {os.cpu_count()} cores before the run",
            file=sys.stderr,
        )
    trials: dict[str, list[Trial]] = {}
    clocks: dict[str, dict | None] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        version = browser.version
        try:
            if not args.skip_floor:
                trials.update({f"floor {k}": v for k, v in run_floor(browser, args, clocks).items()})
            if not args.floor_only:
                trials.update(run_app(browser, args, clocks))
        finally:
            browser.close()

    rows = {name: summarise(ts) for name, ts in trials.items()}
    (ARTIFACTS / "browser-trials.json").write_text(
        json.dumps({name: [asdict(t) for t in ts] for name, ts in trials.items()}, indent=1)
    )
    print()
    table(rows)
    met = goals(rows)
    print()
    for script, seconds in READY_S.items():
        print(f"server start → healthy ({script}): {seconds:.1f} s")
    for g in met:
        print(
            f"goal {g['measurement']:34} ≤ {g['goal_ms']:>5} ms ({g['of']}): {g['measured_ms']:>8.0f} ms "
            f"{'met' if g['met'] else 'NOT met'}; settled {fmt(g['settled_ms'])} ms"
        )
    import streamlit

    emit(
        {
            "bench": "browser",
            "machine": {**machine(), "cores": os.cpu_count(), "chromium": version},
            "load_avg_1min_before": round(load_before[0], 2),  # other work on the machine when we began
            "streamlit": streamlit.__version__,
            "args": vars(args),
            "measurements": rows,
            "clock_lag_ms": clocks,
            "other_session_training": TRAINING | while_training_ratio(rows),
            "server_ready_s": READY_S,
            "goals": met,
        }
    )


if __name__ == "__main__":
    main()
