"""The browser benchmark's side in the page: its JavaScript instrumentation (what a step, a first view and
a switch wait for) and Streamlit's websocket frames decoded into what the report names (bench/browser.py)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

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
  // The pruned text of the current run: growing (its first tokens) or whole.
  b.textFresh = () => b.fresh('.pe-gen-pruned, .pe-gen-growing');
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
    "b.value() === p.value && b.summaryAt(p.value) && b.textFresh() "
    "&& b.fresh('.pe-next-token') && b.metricFresh('KL(dense ‖ pruned), next token')"
)
LAYERS_STEP = "b.value() === p.value && b.summaryAt(p.value) && b.histogramAt(p.value)"
FLOOR_STEP = (
    "b.value() === p.value && b.plotDrawn('floor_histogram') "
    "&& b.q('.st-key-floor_histogram .annotation-text')?.textContent.startsWith(p.value + '%') "
    "&& b.fresh(b.byText('[data-testid=\"stMarkdownContainer\"]', 'stands at ' + p.value + '%'))"
)
RUN_EVENTS = {"rerun_script": "request", "new_session": "run started", "script_finished": "finished"}
CHEAP = "b.textFresh() && b.summaryFresh()"
ANY_RUN = "true"


def page_js(spec: dict | None) -> str:
    """The page's instrumentation; ``spec`` arms it from the first script (first views)."""
    return PAGE_JS.replace("__SPEC__", json.dumps(spec))


# ----- websocket frames


@dataclass
class Frame:
    """One websocket frame: Chrome's timestamp (s), direction, payload size, message kind and details."""

    ts: float
    sent: bool
    size: int
    kind: str
    value: float | None = None  # the slider value a rerun request carries
    label: str = ""  # what a delta draws ("plotly_chart", "heading 'Next token'"), a finish status, or
    # "fragment" for a rerun request a fragment sent by itself (the app's polling)


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
        # A fragment's own rerun (``run_every``: the app's polling) is the app's, not the user's request.
        origin = "fragment" if msg.rerun_script.fragment_id else ""
        for widget in msg.rerun_script.widget_states.widgets:
            if widget.id.endswith("sidebar_sparsity"):
                return kind, slider_value(widget), origin
        return kind, None, origin
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
