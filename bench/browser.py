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
summary (and for SmolLM2 the "Active model" caption naming it).

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
import base64
import json
import os
import re
import shutil
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import ROOT, emit, machine

from tests.support.browser import CHROMIUM_ARGS, streamlit_server

ARTIFACTS = ROOT / "artifacts" / "bench"
APP = ROOT / "app.py"
FLOOR = ROOT / "bench" / "floor_app.py"
STORIES = "stories260K"
SMOLLM2 = "smollm2-135m"
START_PERCENT = 40
VIEWPORT = {"width": 1400, "height": 1000}
# (measurement, goal in ms, which time the goal speaks of): the issue "Live means live in the browser".
GOALS = (
    (f"{STORIES} step (Prune page)", 250, "outputs"),
    (f"{STORIES} step (Layers page)", 250, "outputs"),
    (f"{STORIES} burst", 250, "outputs"),
    (f"{SMOLLM2} step (Prune page)", 700, "outputs"),
    (f"{SMOLLM2} step (Layers page)", 700, "outputs"),
    (f"{SMOLLM2} burst", 700, "outputs"),
    (f"{STORIES} first view", 4000, "settled"),
    (f"{STORIES} new session, warm server", 4000, "settled"),
    (f"switch to {SMOLLM2}", 6000, "outputs"),
    ("switch policy→global", 1000, "outputs"),
    ("switch policy→uniform", 1000, "outputs"),
    ("switch method→random", 1000, "outputs"),
    ("switch method→wanda", 1000, "outputs"),
    ("switch method→magnitude", 1000, "outputs"),
    ("switch pattern→2:4", 1000, "outputs"),
    ("switch pattern→unstructured", 1000, "outputs"),
)

# ----- in the page

PAGE_JS = r"""
(() => {
  if (window.__bench) return;
  const q = (s) => document.querySelector(s);
  const b = window.__bench = {
    lastMutation: 0, mutations: 0, inputs: [], runState: null, states: [],
    armedAt: null, check: null, params: null, expr: '', ok: false, log: [], times: [],
  };
  b.q = q;
  b.container = (el) => (typeof el === 'string' ? q(el) : el)?.closest('[data-testid="stElementContainer"]');
  // Re-sent by the current run: Streamlit marks an element stale from the rerun request until the run
  // sends it again (identical or not).
  b.fresh = (el) => b.container(el)?.getAttribute('data-stale') === 'false';
  b.byText = (sel, text) => [...document.querySelectorAll(sel)].find((e) => e.innerText.includes(text));
  b.num = (s) => Number(s.replace(/,/g, ''));
  b.value = () => {
    const input = q('.st-key-sidebar_sparsity input[type="range"]');
    return input ? Number(input.value) : null;
  };
  b.summary = () => {
    const el = b.byText('[data-testid="stSidebar"] [data-testid="stCaptionContainer"]', 'weights are zero');
    const m = el?.innerText.match(/([\d,]+) of ([\d,]+) weights are zero in (\d+) layers/);
    return m ? {el, zero: b.num(m[1]), total: b.num(m[2]), layers: Number(m[3])} : null;
  };
  // The summary shows `v` percent: every layer rounds its own count, so within one weight per layer.
  b.summaryAt = (v) => {
    const s = b.summary();
    return !!s && b.fresh(s.el) && Math.abs(s.zero - (v / 100) * s.total) <= s.layers;
  };
  b.summaryFresh = () => { const s = b.summary(); return !!s && b.fresh(s.el); };
  b.metricFresh = (label) => b.fresh(b.byText('[data-testid="stMetric"]', label));
  b.captionFresh = (text) => b.fresh(b.byText('[data-testid="stCaptionContainer"]', text));
  b.keyFresh = (key) => b.fresh(q('.st-key-' + key));
  // A Plotly chart re-sent by this run and drawn (its code is loaded lazily: until then, a placeholder).
  b.plotDrawn = (key) => {
    const plot = q('.st-key-' + key + ' .js-plotly-plot');
    return !!plot && b.fresh(plot) && !!plot._fullLayout && !!plot.querySelector('.main-svg');
  };
  // Layers page: the caption states the threshold and count for `v`, the histogram draws its line there.
  b.histogramAt = (v) => {
    const cap = b.byText('[data-testid="stMain"] [data-testid="stCaptionContainer"]',
                         'Current threshold for');
    const plot = q('.st-key-layers_histogram .js-plotly-plot');
    if (!cap || !b.fresh(cap) || !b.plotDrawn('layers_histogram')) return false;
    const m = cap.innerText.match(/\|w\| ≤ ([0-9.]+) · ([\d,]+) of ([\d,]+) weights/);
    if (!m) return false;
    const [t, n, total] = [Number(m[1]), b.num(m[2]), b.num(m[3])];
    const shapes = plot.layout?.shapes || [];
    const lineOk = t === 0 ? shapes.length === 0 : shapes.length > 0 && Math.abs(shapes[0].x0 - t) <= 1e-6;
    return lineOk && Math.abs(n - Math.round((v / 100) * total)) <= 1;
  };
  b.evaluate = () => {
    if (!b.check) return false;
    try { return !!b.check(b, b.params); } catch (e) { return false; }
  };
  // Which parts of the armed check fail (timeouts explain themselves).
  b.explain = () => b.expr.split(' && ').map((part) => {
    try { return [part, !!new Function('b', 'p', 'return (' + part + ');')(b, b.params)]; }
    catch (e) { return [part, String(e)]; }
  });
  b.arm = (expr, params) => {
    b.expr = expr;
    b.check = new Function('b', 'p', 'return (' + expr + ');');
    b.params = params; b.armedAt = performance.now(); b.inputs = []; b.states = []; b.times = [];
    b.ok = b.evaluate();
    b.log = [[b.armedAt, b.ok]];
    return b.armedAt;
  };
  // Every DOM change: its time, the script state the app shows, and whether the checks hold (transitions).
  b.observe = () => {
    const t = performance.now();
    b.lastMutation = t;
    b.mutations += 1;
    const s = q('[data-testid="stApp"]')?.getAttribute('data-test-script-state') ?? null;
    if (s !== b.runState) { b.runState = s; b.states.push([t, s]); }
    if (!b.check) return;
    if (b.times.length < 50000) b.times.push(t);
    const ok = b.evaluate();
    if (ok !== b.ok) { b.ok = ok; b.log.push([t, ok]); }
  };
  b.status = () => ({
    now: performance.now(), lastMutation: b.lastMutation, mutations: b.mutations, runState: b.runState,
    stale: document.querySelectorAll('[data-stale="true"]').length,
    running: !!q('[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"]'),
    ok: b.evaluate(), inputs: b.inputs, states: b.states,
  });
  b.timeline = () => ({log: b.log, times: b.times, wsIn: b.wsIn});
  // Messages as the page's script sees them, to check the DevTools frame times against the page clock.
  b.wsIn = [];
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', () => b.wsIn.push(performance.now()));
    }
  };
  for (const type of ['keydown', 'pointerdown']) {
    document.addEventListener(type, () => b.inputs.push(performance.now()), true);
  }
  new MutationObserver(b.observe).observe(document, {subtree: true, childList: true, attributes: true,
                                                    characterData: true});
  const spec = __SPEC__;
  if (spec) { b.arm(spec.expr, spec.params); b.armedAt = 0; }
})();
"""

# Checks (JS expressions over the helpers above; `p.value` is the percent asked for).
PRUNE_STEP = (
    "b.value() === p.value && b.summaryAt(p.value) && b.fresh('.pe-gen-pruned') "
    "&& b.plotDrawn('prune_topk_chart') && b.metricFresh('KL(dense ‖ pruned), next token')"
)
LAYERS_STEP = "b.value() === p.value && b.summaryAt(p.value) && b.histogramAt(p.value)"
FLOOR_STEP = (
    "b.value() === p.value && b.plotDrawn('floor_histogram') "
    "&& b.q('.st-key-floor_histogram .annotation-text')?.textContent.startsWith(p.value + '%') "
    "&& b.fresh(b.byText('[data-testid=\"stMarkdownContainer\"]', 'stands at ' + p.value + '%'))"
)
RUN_EVENTS = {"rerun_script": "request", "new_session": "run started", "script_finished": "finished"}
CHEAP = "b.fresh('.pe-gen-pruned') && b.summaryFresh()"
ANY_RUN = "true"


def page_js(spec: dict | None) -> str:
    """The page's instrumentation; ``spec`` arms it from the first script (first views)."""
    return PAGE_JS.replace("__SPEC__", json.dumps(spec))


# ----- server


@contextmanager
def serve(script: Path, log_name: str, threads: int | None):
    """``streamlit run script`` on a free port, as the e2e tests start it; yields the URL once healthy."""
    env = {"OMP_NUM_THREADS": str(threads)} if threads else None
    with streamlit_server(script, ARTIFACTS / log_name, env) as url:
        yield url


# ----- websocket frames


@dataclass
class Frame:
    """One websocket frame: Chrome's timestamp (s), direction, payload size, message kind and details."""

    ts: float
    sent: bool
    size: int
    kind: str
    value: float | None = None  # the slider value a rerun request carries
    label: str = ""  # what a delta draws ("plotly_chart", "heading 'Next token'"), or a finish status


def decode(payload: bytes, sent: bool) -> tuple[str, float | None, str]:
    """(kind, slider value, label) of a BackMsg (sent) or ForwardMsg (received)."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    try:
        msg = (BackMsg if sent else ForwardMsg).FromString(payload)
    except Exception:  # not a Streamlit message: counted, not interpreted
        return "unknown", None, ""
    kind = msg.WhichOneof("type") or "none"
    if sent and kind == "rerun_script":
        for widget in msg.rerun_script.widget_states.widgets:
            if widget.id.endswith("sidebar_sparsity"):
                return kind, slider_value(widget), ""
        return kind, None, ""
    if kind == "script_finished":
        return kind, None, ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)
    if kind == "delta":
        return kind, None, delta_label(msg.delta)
    return kind, None, ""


def delta_label(delta) -> str:
    """What a delta draws: an element's type with the start of its text where it has one (headings,
    markdown, metrics), a block's kind, or the transient elements (spinners, toasts) it carries."""
    which = delta.WhichOneof("type")
    if which == "add_block":
        return f"block {delta.add_block.WhichOneof('type') or ''}".strip()
    if which == "new_transient":
        return "transient " + ",".join(element_label(e) for e in delta.new_transient.elements)
    if which == "new_element":
        return element_label(delta.new_element)
    return which or "delta"


def element_label(element) -> str:
    """Type and text start; numbers read "#", so the same element has the same name at every step."""
    etype = element.WhichOneof("type") or "element"
    inner = getattr(element, etype, None)
    text = getattr(inner, "body", "") or getattr(inner, "label", "") or getattr(inner, "text", "")
    text = re.sub(r"\d[\d.,]*", "#", text.strip()) if isinstance(text, str) else ""
    return f"{etype} {text[:32]!r}" if text else etype


def slider_value(widget) -> float | None:
    which = widget.WhichOneof("value")
    if which in ("double_array_value", "int_array_value"):
        values = list(getattr(widget, which).data)
        return values[0] if values else None
    return getattr(widget, which) if which in ("double_value", "int_value") else None


# ----- one page under measurement


@dataclass
class Trial:
    """One measured action. Times in ms from the action (key press, click, navigation start)."""

    value: int | None = None
    outputs: float | None = None
    settled: float | None = None
    client: float | None = None  # action → rerun request sent
    first_reply: float | None = None  # request → first frame received (new_session: the run started)
    first_delta: float | None = None  # request → first element of the run
    outputs_server: float | None = None  # request → the last frame received before the outputs showed
    finished: float | None = None  # request → script_finished
    drawing: float | None = None  # script_finished → settled
    bytes: int = 0
    requests: int = 0
    values_requested: list = field(default_factory=list)
    runs: int = 0
    interrupted: int = 0  # runs started but not finished: stopped for a newer request
    # (ms, "previous → next frame", count): the server's silences, summed by name, longest first
    gaps: list = field(default_factory=list)
    # (ms from the action, what): requests sent, runs started and finished (negative: before the action)
    events: list = field(default_factory=list)
    timed_out: bool = False


class Probe:
    """A browser page with its instrumentation and its websocket frames (from the DevTools protocol)."""

    def __init__(self, browser, url: str, spec: dict | None, quiet_ms: float, timeout_s: float):
        self.page = browser.new_page(viewport=VIEWPORT)
        self.page.add_init_script(page_js(spec))
        self.url, self.quiet_ms, self.timeout_s = url, quiet_ms, timeout_s
        self.frames: list[Frame] = []
        self.wall_offset = 0.0  # Chrome wall time minus its monotonic timestamp, seconds
        self.origin = 0.0  # the page's performance.timeOrigin, ms since the epoch
        cdp = self.page.context.new_cdp_session(self.page)
        cdp.on("Network.webSocketWillSendHandshakeRequest", self._on_handshake)
        cdp.on("Network.webSocketFrameSent", lambda e: self._on_frame(e, sent=True))
        cdp.on("Network.webSocketFrameReceived", lambda e: self._on_frame(e, sent=False))
        cdp.send("Network.enable")
        self.cdp = cdp

    def _on_handshake(self, event: dict) -> None:
        self.wall_offset = event["wallTime"] - event["timestamp"]

    def _on_frame(self, event: dict, sent: bool) -> None:
        response = event["response"]
        data = response["payloadData"]
        payload = base64.b64decode(data) if response.get("opcode") == 2 else data.encode()
        kind, value, label = decode(payload, sent)
        self.frames.append(Frame(event["timestamp"], sent, len(payload), kind, value, label))

    def ms(self, frame: Frame) -> float:
        """A frame's time on the page's performance.now() clock."""
        return (frame.ts + self.wall_offset) * 1000.0 - self.origin

    def open(self) -> Trial:
        """Navigate and measure the first view (the init script was armed with the first view's checks)."""
        self.page.goto(self.url, wait_until="commit")
        self.origin = self.page.evaluate("performance.timeOrigin")
        return self.wait(action="navigation")

    def arm(self, expr: str, value: int | None = None) -> None:
        self.wait_idle()
        self.page.evaluate("([e, p]) => window.__bench.arm(e, p)", [expr, {"value": value}])

    def wait_idle(self, quiet_s: float = 0.5) -> None:
        """Before an action: no script run and no background measurement pending (ui.background's progress)
        for ``quiet_s``, so every measurement starts from an idle page and machine."""
        deadline, since = time.monotonic() + self.timeout_s, None
        while time.monotonic() < deadline:
            busy = self.page.evaluate(
                "() => !!document.querySelector('.st-key-background_progress') || document.querySelector("
                "'[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state') === 'running'"
            )
            now = time.monotonic()
            since = None if busy else (since or now)
            if since is not None and now - since >= quiet_s:
                return
            time.sleep(0.05)

    def status(self) -> dict:
        return self.page.evaluate("window.__bench.status()")

    def wait(self, action: str = "first", value: int | None = None) -> Trial:
        """Wait until settled (see the module docstring); ``action``: the first or last input since arming,
        or the navigation start."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            st = self.status()
            inputs = st["inputs"]
            if action == "navigation":
                start = action_ms = 0.0
            elif inputs:
                start, action_ms = inputs[0], inputs[0] if action == "first" else inputs[-1]
            else:
                start = action_ms = None
            if start is not None and self._settled(st, start, value):
                return self._trial(st, start, action_ms, value)
            if time.monotonic() > deadline:
                self._report_timeout(st, start, value)
                return Trial(value=value, timed_out=True)
            self.page.wait_for_timeout(50)

    def _report_timeout(self, st: dict, start_ms: float | None, value: int | None) -> None:
        requests = self._requests(start_ms) if start_ms is not None else []
        print(
            f"  timed out: asked {value}, requested {[f.value for f in requests]}, script {st['runState']}, "
            f"stale {st['stale']}, states {st['states']}, inputs {len(st['inputs'])}, "
            f"checks {self.page.evaluate('window.__bench.explain()')}",
            file=sys.stderr,
        )

    def _requests(self, since_ms: float) -> list[Frame]:
        return [f for f in self.frames if f.sent and f.kind == "rerun_script" and self.ms(f) >= since_ms - 2]

    def _received(self, since_ms: float) -> list[Frame]:
        return [f for f in self.frames if not f.sent and self.ms(f) >= since_ms]

    def _settled(self, st: dict, start_ms: float, value: int | None) -> bool:
        requests = self._requests(start_ms)
        if not requests or (value is not None and requests[-1].value != value):
            return False
        runs = [
            f for f in self._received(self.ms(requests[-1])) if f.kind in ("new_session", "script_finished")
        ]
        if not runs or runs[-1].kind != "script_finished":
            return False
        idle = st["runState"] == "notRunning" and st["stale"] == 0 and not st["running"]
        return idle and st["ok"] and st["now"] - st["lastMutation"] >= self.quiet_ms

    def _trial(self, st: dict, start_ms: float, action_ms: float, value: int | None) -> Trial:
        requests = self._requests(start_ms)
        last = requests[-1]
        request_ms = self.ms(last)
        finished_ms = max(self.ms(f) for f in self._received(request_ms) if f.kind == "script_finished")
        settled_ms = max(st["lastMutation"], finished_ms)
        received = [f for f in self._received(start_ms) if self.ms(f) <= settled_ms + 1]
        replies = [f for f in received if self.ms(f) >= request_ms]
        run_start = next((self.ms(f) for f in replies if f.kind == "new_session"), request_ms)
        # A later run of the same page (the app's rerun once its background measurements are in) marks the
        # elements stale again while it runs; the outputs are those the answering run showed, before it.
        later = [self.ms(f) for f in replies if f.kind == "new_session" and self.ms(f) > run_start]
        outputs_ms = self._outputs(run_start, settled_ms, later[0] if later else settled_ms + 1)
        shown = [self.ms(f) for f in replies if self.ms(f) <= min(outputs_ms, finished_ms)]
        return Trial(
            value=value,
            outputs=outputs_ms - action_ms,
            outputs_server=(shown[-1] - request_ms) if shown else None,
            settled=settled_ms - action_ms,
            client=self.ms(next(f for f in requests if self.ms(f) >= action_ms - 2)) - action_ms
            if action_ms > 0
            else None,
            first_reply=self.ms(replies[0]) - request_ms,
            first_delta=next((self.ms(f) - request_ms for f in replies if f.kind == "delta"), None),
            finished=finished_ms - request_ms,
            drawing=settled_ms - finished_ms,
            bytes=sum(f.size for f in received),
            requests=len(requests),
            values_requested=[f.value for f in requests],
            runs=sum(f.kind == "new_session" for f in received),
            interrupted=sum(f.kind == "new_session" for f in received)
            - sum(f.kind == "script_finished" and f.label != "FINISHED_EARLY_FOR_RERUN" for f in received),
            gaps=self._gaps(replies),
            events=sorted(
                [(round(t - action_ms), "press") for t in st["inputs"]]
                + [
                    self._event(f, action_ms)
                    for f in self.frames
                    if f.kind in RUN_EVENTS and start_ms - 2 <= self.ms(f) <= settled_ms + 1
                ]
            ),
        )

    def _event(self, frame: Frame, action_ms: float) -> tuple[int, str]:
        what = RUN_EVENTS[frame.kind]
        if frame.kind == "rerun_script" and frame.value is not None:
            what += f" {frame.value:g}"
        return round(self.ms(frame) - action_ms), what

    def _gaps(self, replies: list[Frame], keep: int = 8) -> list[tuple[float, str, int]]:
        """Where the answering run was silent: the time from one received frame to the next, named
        "previous → next" (the server was computing what comes after the previous frame), summed over
        identical names (a loop's progress updates add up); (ms, name, how many), longest first."""
        totals: dict[str, list] = {}
        for a, b in zip(replies, replies[1:], strict=False):
            entry = totals.setdefault(f"{a.label or a.kind} → {b.label or b.kind}", [0.0, 0])
            entry[0] += self.ms(b) - self.ms(a)
            entry[1] += 1
        gaps = [(round(ms, 1), name, count) for name, (ms, count) in totals.items()]
        return sorted(gaps, reverse=True)[:keep]

    def _outputs(self, run_start: float, settled_ms: float, until: float) -> float:
        """When the checks began to hold for good, in the run that answered the last request.

        The start of the checks' last true spell before ``until`` (the next run, if any), if it began once
        that run had started. A fast run can reach the DOM in one React commit with nothing ever shown stale:
        when the checks held from before the run (a freshness-only check), the first DOM change after the
        run started is when it showed.
        """
        timeline = self.page.evaluate("window.__bench.timeline()")
        log = [entry for entry in timeline["log"] if entry[0] < until] or timeline["log"][:1]
        since, holds = log[-1]
        if not holds:  # false at the next run: fall back to the last true spell of all
            since = timeline["log"][-1][0]
        if since >= run_start:
            return since
        return next((t for t in timeline["times"] if t >= run_start), settled_ms)

    def clock_lag(self) -> dict | None:
        """Page-side receipt of each message minus Chrome's network timestamp for it (ms): small and
        positive when the two clocks are put together right (min), larger when the page was busy."""
        page_in = self.page.evaluate("window.__bench.wsIn")
        received = [self.ms(f) for f in self.frames if not f.sent]
        lags = [p - r for p, r in zip(page_in, received, strict=False)]
        if not lags:
            return None
        return {"frames": len(lags), "min": round(min(lags), 2), "median": round(statistics.median(lags), 2)}

    # ----- actions

    def slider(self):
        return self.page.locator('.st-key-sidebar_sparsity input[type="range"]')

    def press(self, key: str, expr: str, value: int) -> Trial:
        """Focus the sparsity slider, press ``key`` once, wait until settled at ``value``."""
        self.slider().focus()
        self.arm(expr, value)
        self.page.keyboard.press(key)
        return self.wait("first", value)

    def burst(self, presses: int, gap_ms: float, expr: str, value: int) -> Trial:
        """ArrowRight ``presses`` times, ``gap_ms`` apart; from the last press to settled at ``value``."""
        self.slider().focus()
        self.arm(expr, value)
        begin = time.perf_counter()
        for i in range(presses):
            self.page.keyboard.press("ArrowRight")
            if i < presses - 1:  # the next press gap_ms after this one began, not after it returned
                time.sleep(max(0.0, begin + (i + 1) * gap_ms / 1000.0 - time.perf_counter()))
        return self.wait("last", value)

    def move_to(self, percent: int, expr: str) -> None:
        """Bring the slider to ``percent`` with PageUp/PageDown and arrows, settling after each press."""
        current = int(self.slider().input_value())
        while current != percent:
            delta = percent - current
            key, step = (("PageUp", 10) if delta >= 10 else ("PageDown", -10) if delta <= -10 else
                         ("ArrowRight", 1) if delta > 0 else ("ArrowLeft", -1))  # fmt: skip
            current += step
            self.press(key, expr, current)

    def choose(self, widget_key: str, option: str, expr: str = CHEAP) -> Trial:
        """Pick ``option`` in the sidebar selectbox or radio ``widget_key``; time from that click."""
        self.wait_idle()  # a rerun while the dropdown is open would close it
        widget = self.page.locator(f".st-key-{widget_key}")
        if widget.get_by_role("combobox").count():
            box = widget.get_by_role("combobox")
            box.scroll_into_view_if_needed()
            box.click()
            box.press_sequentially(option[:4])  # the searchable list, filtered: the option is in view
            target = self.page.get_by_role("option", name=option, exact=True)
        else:
            target = widget.get_by_text(option, exact=True)
        target.wait_for()
        self.arm(expr)
        target.click()
        return self.wait("first")

    def go(self, page_name: str) -> Trial:
        """Open another page of the app from the sidebar navigation."""
        link = self.page.get_by_test_id("stSidebarNav").get_by_role("link", name=page_name)
        self.arm(ANY_RUN)
        link.click()
        return self.wait("first")

    def screenshot(self, name: str) -> None:
        """The whole settled page: Streamlit scrolls inside its own containers, so the viewport grows for the
        shot, then shrinks back and the page is left to become quiet again."""
        self.page.set_viewport_size({"width": 1400, "height": 2800})
        self.page.wait_for_timeout(1000)
        self.page.screenshot(path=str(ARTIFACTS / name))
        self.page.set_viewport_size(VIEWPORT)
        self.wait_quiet()

    def wait_quiet(self, timeout_s: float = 30) -> None:
        """Until the DOM has not changed for the quiet period (after a resize, say)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st = self.status()
            if st["now"] - st["lastMutation"] >= max(self.quiet_ms, 300):
                return
            self.page.wait_for_timeout(50)


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


def steps(probe: Probe, count: int, expr: str) -> list[Trial]:
    """One warm-up ArrowRight, then ``count`` measured ones, each waited until settled."""
    probe.press("ArrowRight", expr, value_after(probe, 1))
    trials = []
    for _ in range(count):
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


# ----- report


def fmt(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def stats(values: list[float | None]) -> dict | None:
    """Median, p90 and max of the measured values (None when none were measured)."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    p90 = statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]
    return {"median": round(statistics.median(xs), 1), "p90": round(p90, 1), "max": round(xs[-1], 1)}


def summarise(trials: list[Trial]) -> dict:
    """Per measurement: outputs and settled stats, breakdown medians, bytes, requests and runs."""

    def median(attr: str) -> float | None:
        xs = [getattr(t, attr) for t in trials if getattr(t, attr) is not None]
        return round(statistics.median(xs), 1) if xs else None

    return {
        "n": len(trials),
        "timeouts": sum(t.timed_out for t in trials),
        "outputs_ms": stats([t.outputs for t in trials]),
        "settled_ms": stats([t.settled for t in trials]),
        "breakdown_ms": {
            k: median(k)
            for k in ("client", "first_reply", "first_delta", "outputs_server", "finished", "drawing")
        },
        "kb_received": round(statistics.median(t.bytes for t in trials) / 1024, 1),
        "requests": median("requests"),
        "runs": median("runs"),
        "interrupted": median("interrupted"),
        "longest_gaps_ms": longest_gaps(trials),
        "outputs_all": [None if t.outputs is None else round(t.outputs) for t in trials],
        "settled_all": [None if t.settled is None else round(t.settled) for t in trials],
        **({"events": [t.events for t in trials]} if any(t.requests > 1 for t in trials) else {}),
    }


def longest_gaps(trials: list[Trial], keep: int = 4) -> list[tuple[float, str, float]]:
    """The server's longest silences in these trials: per name, the median time (and count) over the
    trials where it was among the longest; names seen in at least half of the trials."""
    by_name: dict[str, list[tuple[float, int]]] = {}
    for trial in trials:
        for gap, name, count in trial.gaps:
            by_name.setdefault(name, []).append((gap, count))
    common = [
        (statistics.median(g for g, _ in v), name, statistics.median(c for _, c in v))
        for name, v in by_name.items()
        if 2 * len(v) >= len(trials)
    ]
    return [(round(g, 1), name, count) for g, name, count in sorted(common, reverse=True)[:keep]]


def table(rows: dict[str, dict]) -> None:
    """One line per measurement: medians/p90/max, then the breakdown medians (ms) and what went over the
    wire; then, per measurement, the server's longest silences."""
    head = (
        f"{'measurement':34} {'n':>2} {'outputs med/p90/max':>20} {'settled med/p90/max':>20} "
        f"{'client':>6} {'run':>5} {'1st el':>6} {'out sv':>6} {'finish':>6} {'draw':>5} {'KB':>5} "
        f"{'req':>3} {'runs':>4} {'intr':>4}"
    )
    print(head)
    print("-" * len(head))
    for name, s in rows.items():
        b = s["breakdown_ms"]
        print(
            f"{name:34} {s['n']:>2} {triple(s['outputs_ms']):>20} {triple(s['settled_ms']):>20} "
            f"{fmt(b['client']):>6} {fmt(b['first_reply']):>5} {fmt(b['first_delta']):>6} "
            f"{fmt(b['outputs_server']):>6} "
            f"{fmt(b['finished']):>6} {fmt(b['drawing']):>5} {s['kb_received']:>5.0f} "
            f"{fmt(s['requests']):>3} {fmt(s['runs']):>4} {fmt(s['interrupted']):>4}"
        )
    print(
        "\nclient: press → request sent; run: request → run started; 1st el: request → first element; "
        "out sv: request → last frame before the outputs showed;\nfinish: request → script_finished; "
        "draw: script_finished → last DOM change; intr: runs interrupted"
    )
    print(
        "\nLongest silences between two received frames, summed over repeats (median ms; the server "
        "computing in between):"
    )
    for name, s in rows.items():
        if s["longest_gaps_ms"]:
            print(f"  {name}:")
            for gap, name, count in s["longest_gaps_ms"][:3]:
                print(f"    {gap:>6.0f}  {name}" + (f" (×{count:g})" if count > 1 else ""))


def triple(v: dict | None) -> str:
    return "—" if v is None else f"{v['median']:.0f}/{v['p90']:.0f}/{v['max']:.0f}"


def goals(rows: dict[str, dict]) -> list[dict]:
    """Each goal of the issue against its measurement's median (``met``), and the whole page's (settled)."""
    out = []
    for name, goal_ms, which in GOALS:
        s = rows.get(name)
        if s is None or s[f"{which}_ms"] is None:
            continue
        measured, settled = s[f"{which}_ms"]["median"], (s["settled_ms"] or {}).get("median")
        out.append(
            {
                "measurement": name,
                "goal_ms": goal_ms,
                "of": which,
                "measured_ms": measured,
                "met": measured <= goal_ms,
                "settled_ms": settled,
                "settled_met": settled is not None and settled <= goal_ms,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=(STORIES, SMOLLM2, "both"), default="both")
    parser.add_argument("--steps", type=int, default=10, help="measured single steps per page")
    parser.add_argument("--burst", type=int, default=8, help="ArrowRight presses in the burst")
    parser.add_argument("--bursts", type=int, default=3, help="bursts per measurement")
    parser.add_argument("--gap-ms", type=float, default=30.0, help="time between burst presses")
    parser.add_argument("--quiet-ms", type=float, default=150.0, help="DOM quiet period that ends a step")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="longest wait for one action")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the servers")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--floor-only", action="store_true", help="only the floor app (a check of the bench)")
    parser.add_argument("--skip-switches", action="store_true", help="no policy/method/pattern switches")
    parser.add_argument("--skip-layers", action="store_true", help="no steps on the Layers page")
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
            "goals": met,
        }
    )


if __name__ == "__main__":
    main()
