"""One browser page under measurement for bench/browser.py: its instrumentation armed, its websocket frames
recorded through Chrome's DevTools protocol, and every action timed until settled (definitions in
bench/browser.py's docstring)."""

from __future__ import annotations

import base64
import statistics
import sys
import time
from dataclasses import dataclass, field

from _common import ROOT
from browser_page import ANY_RUN, CHEAP, RUN_EVENTS, Frame, decode, page_js

ARTIFACTS = ROOT / "artifacts" / "bench"

VIEWPORT = {"width": 1400, "height": 1000}

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
    # (ms from the answering run's start, what, bytes): every frame received from the request on, so a slow
    # action shows which element the server was computing before (in artifacts/bench/browser-trials.json)
    frames: list = field(default_factory=list)


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
        # The run that answers is the one the user's last request started; a fragment's own request (the
        # app's polling, once its background measurements are in) starts one of the app's later runs.
        last = [f for f in requests if f.label != "fragment"][-1:] or requests[-1:]
        request_ms = self.ms(last[0])
        finished_ms = max(self.ms(f) for f in self._received(request_ms) if f.kind == "script_finished")
        settled_ms = max(st["lastMutation"], finished_ms)
        received = [f for f in self._received(start_ms) if self.ms(f) <= settled_ms + 1]
        replies = [f for f in received if self.ms(f) >= request_ms]
        run_start = next((self.ms(f) for f in replies if f.kind == "new_session"), request_ms)
        # A later run of the same page (the app's rerun once its background measurements are in) marks the
        # elements stale again while it runs; the outputs are those the answering run showed, before it.
        later = [self.ms(f) for f in replies if f.kind == "new_session" and self.ms(f) > run_start]
        outputs_ms = self._outputs(run_start, settled_ms, later[0] if later else settled_ms + 1)
        # The answering run's own finish (a later run's finish is part of settling, not of answering).
        finished_ms = next(
            (self.ms(f) for f in replies if f.kind == "script_finished" and self.ms(f) >= run_start),
            finished_ms,
        )
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
            frames=[(round(self.ms(f) - run_start), f.label or f.kind, f.size) for f in replies],
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
        what = ("poll " if frame.label == "fragment" else "") + RUN_EVENTS[frame.kind]
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
