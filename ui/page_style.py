"""How a page looks while a run updates it: steady, with a cue only on the pruned text being generated again.

Streamlit dims every element that the current run has not sent again yet: half a second into the run, a
one-second opacity animation on each of them (about 65 on the Prune page, the sidebar's included). With
software rendering on this project's two-core machine the browser repaints the page for it while the run
computes, so in a burst of slider moves on SmolLM2 it takes CPU from the generation the user is waiting for.
Browser bench, SmolLM2 bursts, in one hour, alternating: medians of five bursts 840, 847 and 697 ms with
Streamlit's dimming, 758, 701 and 708 without it (fifteen bursts each: 824 against 714). Dimming only the
next-token chart and the metrics, without animation, gave back the whole gain (833-863 ms).

So every element keeps its opacity while a run updates the page, and only the pruned text says that it is
being generated again: its words turn grey if they are still the previous setting's 0.4 s into the run
(``pe-gen-partial``, a small box; a quick step changes nothing). The new text replaces the old one from its
start as it grows (``pe-gen-growing``, ending in an ellipsis): its words in the usual colour, the previous
text's remaining words after them (``pe-old``) turning grey at the same moment as the whole old text would
(``ui.generation`` sets the delay), so a quick run neither flickers nor shifts the layout. Streamlit's
running indicator stays.
"""

from __future__ import annotations

import streamlit as st

WAIT_SECONDS = 0.4  # a step answered sooner changes nothing on the page until its outputs arrive

STEADY_CSS = f"""<style>
.stElementContainer[data-stale="true"] {{ opacity: 1 !important; transition: none !important; }}
.pe-gen-partial, .pe-old {{ animation: pe-waiting 0s linear {WAIT_SECONDS}s forwards; }}
.pe-gen-growing::after {{ content: " \\2026"; color: rgba(128, 128, 128, 0.8); }}
@keyframes pe-waiting {{ to {{ color: rgba(128, 128, 128, 0.8); }} }}
</style>"""


def steady() -> None:
    """Send the page's style for this run (a style-only ``st.html`` takes no room on the page)."""
    st.html(STEADY_CSS)
