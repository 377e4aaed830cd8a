"""The browser benchmark's report: per-measurement statistics, the table, and the goals met or not."""

from __future__ import annotations

import statistics

from browser_probe import Trial

STORIES = "stories260K"
SMOLLM2 = "smollm2-135m"
# (measurement, goal in ms, which time the goal speaks of): the issue "Live means live in the browser".
GOALS = (
    (f"{STORIES} step (Prune page)", 250, "outputs"),
    (f"{STORIES} step (Layers page)", 250, "outputs"),
    (f"{STORIES} burst", 250, "outputs"),
    (f"{SMOLLM2} step (Prune page)", 700, "outputs"),
    (f"{SMOLLM2} step after reading (Prune page)", 700, "outputs"),
    (f"{STORIES} step after reading (Prune page)", 250, "outputs"),
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
