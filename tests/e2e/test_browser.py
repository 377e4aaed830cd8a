"""The real app in headless Chromium: ``streamlit run`` on a free port, driven with Playwright.

Uses Debian's chromium binary (found with ``shutil.which``); it never downloads a browser.
Screenshots are kept under ``artifacts/e2e/``.
"""

from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM_ARGS, streamlit_server

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
CHROMIUM = shutil.which("chromium")
WAIT_MS = 180_000  # the CPU is shared; a first run loads the model and scores the text

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian chromium is not installed (apt install chromium); no browser is downloaded",
    ),
]


@pytest.fixture
def app_url(tmp_path):
    with streamlit_server(ROOT / "app.py", tmp_path / "streamlit.log", {"OMP_NUM_THREADS": "1"}) as url:
        yield url


@contextmanager
def _browser_page(height: int):
    """A page of Debian's headless chromium, 1400 px wide; screenshots go to ``ARTIFACTS``."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": height})
        finally:
            browser.close()


def _settle(page) -> None:
    """Wait until the script run triggered by the last interaction has finished."""
    page.wait_for_timeout(500)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=WAIT_MS)


def _threshold(page) -> tuple[float, float | None]:
    """The threshold the Layers page states in its caption, and the x of the line drawn on the histogram."""
    caption = page.get_by_text(re.compile(r"Current threshold for")).first
    caption.wait_for(timeout=WAIT_MS)
    stated = float(re.search(r"\|w\| ≤ ([0-9.]+)", caption.inner_text()).group(1))
    drawn = page.evaluate(
        """() => {
            const plot = document.querySelector('[data-testid="stMain"] .js-plotly-plot');  // not the sidebar
            const shapes = (plot && plot.layout && plot.layout.shapes) || [];
            return shapes.length ? shapes[0].x0 : null;
        }"""
    )
    return stated, drawn


def _go(page, name: str) -> None:
    page.get_by_role("link", name=name).click()
    _settle(page)


def test_slider_prunes_in_a_real_browser(app_url):
    with _browser_page(2000) as page:
        page.goto(app_url)
        pruned = page.locator(".pe-gen-pruned")
        pruned.wait_for(timeout=WAIT_MS)
        _settle(page)
        assert pruned.inner_text() == page.locator(".pe-gen-dense").inner_text()

        _go(page, "Layers")
        assert _threshold(page) == (0.0, None)

        _go(page, "Prune")
        before = page.locator(".pe-gen-pruned").inner_text()
        sidebar = page.get_by_test_id("stSidebar")
        slider = sidebar.get_by_test_id("stSlider").filter(has_text="Global sparsity").get_by_role("slider")
        slider.focus()
        for _ in range(5):  # PageUp moves a slider by a tenth of its range
            page.keyboard.press("PageUp")
        page.wait_for_function(
            "before => { const el = document.querySelector('.pe-gen-pruned');"
            " return el && el.innerText !== before; }",
            arg=before,
            timeout=WAIT_MS,
        )
        _settle(page)
        assert "50.0%" in sidebar.get_by_test_id("stMetric").first.inner_text()
        assert page.locator(".pe-gen-pruned").inner_text() != page.locator(".pe-gen-dense").inner_text()
        assert page.locator(".pe-gen-pruned .pe-diff").count() > 0
        page.screenshot(path=str(ARTIFACTS / "prune.png"))

        _go(page, "Layers")
        stated, drawn = _threshold(page)
        assert stated > 0.0
        assert drawn == pytest.approx(stated, abs=1e-6)
        grid = page.locator(".pe-sparsity-grid")  # the block × kind overview
        grid.wait_for(timeout=WAIT_MS)
        _settle(page)
        cells = grid.locator(".pe-cell[data-pct]")
        assert cells.count() == 35  # stories260K: 5 blocks × 7 kinds, each at the uniform 50%
        assert all(abs(float(v) - 50.0) < 0.5 for v in cells.evaluate_all("cs => cs.map(c => c.dataset.pct)"))
        page.screenshot(path=str(ARTIFACTS / "layers.png"))


def test_compare_page_applies_a_clicked_point(app_url):
    """Click a point of the Wanda curve, apply it: the sidebar and the token view follow."""
    with _browser_page(2400) as page:
        page.goto(app_url)
        page.locator(".pe-gen-pruned").wait_for(timeout=WAIT_MS)
        _settle(page)
        _go(page, "Compare")
        page.get_by_test_id("stMain").locator(".js-plotly-plot").first.wait_for(timeout=WAIT_MS)
        _settle(page)
        x, y = page.evaluate(
            """() => {
                const gd = document.querySelector('[data-testid="stMain"] .js-plotly-plot');
                const trace = gd._fullData.find(t => t.name.startsWith('Wanda'));
                const i = trace.x.length - 3, L = gd._fullLayout, box = gd.getBoundingClientRect();
                return [L.xaxis.l2p(trace.x[i]) + L._size.l + box.left,
                        L.yaxis.l2p(Math.log10(trace.y[i])) + L._size.t + box.top];
            }"""
        )
        page.mouse.click(x, y)
        _settle(page)
        main = page.get_by_test_id("stMain")
        chosen = main.get_by_test_id("stSelectbox").filter(has_text="Point to apply").get_by_role("combobox")
        assert chosen.input_value().startswith("Wanda · unstructured")

        main.get_by_role("button", name="Apply this point").click()
        _settle(page)
        sidebar = page.get_by_test_id("stSidebar")
        method = sidebar.get_by_test_id("stSelectbox").filter(has_text="Method").get_by_role("combobox")
        assert method.input_value().startswith("Wanda")
        assert "0.0%" not in sidebar.get_by_test_id("stMetric").first.inner_text()
        page.locator(".pe-loss .pe-tok").first.wait_for(timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "compare.png"))


@pytest.mark.real_model
def test_a_model_switch_in_the_browser_starts_from_the_new_models_defaults(app_url):
    """The browser sends widget values back on every rerun: after a switch to SmolLM2 it must show (and send)
    SmolLM2's prompt and token count and a 0% slider, not the previous model's values."""
    from playwright.sync_api import expect

    from prune_explorer.models.smollm2 import NAME

    with _browser_page(1400) as page:
        page.goto(app_url)
        page.locator(".pe-gen-pruned").wait_for(timeout=WAIT_MS)
        _settle(page)
        sidebar = page.get_by_test_id("stSidebar")
        slider = sidebar.get_by_test_id("stSlider").filter(has_text="Global sparsity").get_by_role("slider")
        slider.focus()
        page.keyboard.press("PageUp")
        _settle(page)
        expect(sidebar.get_by_test_id("stMetric").first).to_contain_text("10.0%", timeout=WAIT_MS)

        sidebar.get_by_test_id("stSelectbox").filter(has_text="Model").click()
        page.get_by_role("option", name=NAME).click()
        expect(sidebar.get_by_text(f"Active model: {NAME}")).to_be_visible(timeout=WAIT_MS)
        _settle(page)
        main = page.get_by_test_id("stMain")
        prompt = main.get_by_test_id("stTextArea").filter(has_text="Prompt").locator("textarea")
        # While a run redraws the page, the old widget can stay beside the new one: wait for one prompt.
        expect(prompt).to_have_count(1, timeout=WAIT_MS)
        expect(prompt).to_have_value("Write one sentence about the sea.", timeout=10_000)
        tokens = main.get_by_test_id("stSlider").filter(has_text="New tokens")
        assert tokens.get_by_test_id("stSliderThumbValue").inner_text() == "8"  # SmolLM2's default
        sparsity = sidebar.get_by_test_id("stSlider").filter(has_text="Global sparsity")
        assert sparsity.get_by_test_id("stSliderThumbValue").inner_text() == "0%"
        expect(sidebar.get_by_test_id("stMetric").first).to_contain_text("Pruned (selected layers)0.0%")

        slider.focus()
        page.keyboard.press("PageUp")  # a rerun after the switch keeps SmolLM2's prompt
        _settle(page)
        expect(prompt).to_have_count(1, timeout=WAIT_MS)
        assert prompt.input_value() == "Write one sentence about the sea."
        expect(sidebar.get_by_test_id("stMetric").first).to_contain_text("10.0%", timeout=WAIT_MS)
        # While the run redraws, the stale next-token view can stand beside the new one for a moment.
        main.get_by_text("KL(dense ‖ pruned), next token").first.wait_for(timeout=WAIT_MS)
        _settle(page)  # the run that follows the move has finished: no stale elements in the screenshot
        page.screenshot(path=str(ARTIFACTS / "smollm2.png"))


def test_a_scene_link_shows_its_settings_in_the_widgets(app_url):
    """A link at 40% opened as the first page of a fresh server: the slider shows 40%, the model is pruned
    at 40%, and a page switch keeps both (the switch sends the slider's value from the browser). The slider
    used to show 0% when the browser drew it after the next run had come (timing-dependent; the mechanism
    that prevents it is checked in tests/test_app_scenes.py)."""
    with _browser_page(1400) as page:
        page.goto(f"{app_url}/?model=stories260K&sparsity=40")
        page.locator(".pe-gen-pruned").wait_for(timeout=WAIT_MS)
        _settle(page)
        page.wait_for_timeout(3000)  # the rerun that shows the background measurements
        sidebar = page.get_by_test_id("stSidebar")
        slider = sidebar.get_by_test_id("stSlider").filter(has_text="Global sparsity").get_by_role("slider")
        assert slider.input_value() == "40"
        assert "40.0%" in sidebar.get_by_test_id("stMetric").first.inner_text()

        _go(page, "Layers")
        page.wait_for_timeout(1000)
        assert slider.input_value() == "40"
        assert "40.0%" in sidebar.get_by_test_id("stMetric").first.inner_text()


# Every 50 ms for ``ms``: how many elements a run marks stale, and the lowest opacity among them.
_WATCH_STALE = """async ms => {
    const samples = [], start = performance.now();
    while (performance.now() - start < ms) {
        const stale = [...document.querySelectorAll('.stElementContainer[data-stale="true"]')];
        const lowest = Math.min(1, ...stale.map(el => parseFloat(getComputedStyle(el).opacity)));
        samples.push([performance.now() - start, stale.length, lowest]);
        await new Promise(r => setTimeout(r, 50));
    }
    return samples;
}"""


def test_a_long_run_leaves_the_page_opaque_and_greys_only_the_pruned_text_it_regenerates(app_url):
    """ui.page_style: Streamlit's dimming of the elements a run has not sent again (after 0.5 s, a 1 s fade
    to 0.33) is off, since it cost the browser the CPU a SmolLM2 burst needs; the previous pruned text turns
    grey 0.4 s into its regeneration instead."""
    from prune_explorer.models.smollm2 import NAME

    with _browser_page(1000) as page:
        page.goto(app_url)
        page.locator(".pe-gen-pruned").wait_for(timeout=WAIT_MS)
        _settle(page)
        text = page.locator(".pe-gen-pruned")
        before = text.evaluate("el => getComputedStyle(el).color")
        grey = text.evaluate(
            """async el => {
                el.classList.replace('pe-gen-pruned', 'pe-gen-partial');  // as a run redraws the old text
                const early = getComputedStyle(el).color;
                await new Promise(r => setTimeout(r, 600));
                return [early, getComputedStyle(el).color];
            }"""
        )
        assert grey[0] == before and grey[1] != before  # unchanged within 0.4 s, then grey

        # Loading SmolLM2 keeps one run going for seconds, the stories page's elements stale all along.
        page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").filter(has_text="Model").click()
        page.get_by_role("option", name=NAME).click()
        samples = page.evaluate(_WATCH_STALE, 2500)
        _settle(page)
    stale = [(t, lowest) for t, count, lowest in samples if count]
    assert stale, "the switch's run marked no element stale"
    late = [lowest for t, lowest in stale if t - stale[0][0] >= 1.0]  # Streamlit's fade is under way by then
    assert late, "no element stayed stale for a second: the switch was too quick to tell"
    assert min(late) == 1.0


# Every 40 ms for ``ms``: how many prompt boxes the page shows (a stale one beside the new one counts 2).
_WATCH_PROMPTS = """async ms => {
    const counts = [], start = performance.now();
    while (performance.now() - start < ms) {
        counts.push(document.querySelectorAll('[data-testid="stTextArea"]').length);
        await new Promise(r => setTimeout(r, 40));
    }
    return counts;
}"""


def test_the_first_step_after_a_link_that_loads_a_model_shows_one_page(app_url):
    """A link to SmolLM2 loads it in its first run, whose loading bar sat above the page; the next run drew
    every element one place higher, beside the stale ones, so the first slider step showed two prompt boxes
    until it ended. ui.scenes now draws the page anew after such a load."""
    from prune_explorer.models.smollm2 import NAME

    with _browser_page(1000) as page:
        page.goto(f"{app_url}/?model={NAME}&sparsity=40")
        page.locator(".pe-gen-pruned").wait_for(timeout=WAIT_MS)
        _settle(page)
        slider = page.locator('.st-key-sidebar_sparsity input[type="range"]')
        slider.focus()
        page.keyboard.press("PageUp")
        counts = page.evaluate(_WATCH_PROMPTS, 1500)
        _settle(page)
        assert slider.input_value() == "50"
    assert max(counts) == 1, counts


# Every pruned text put on the page for ``ms`` (the slot's html is replaced at each redraw): when, its class,
# the length of its new words (not the previous text's, ``pe-old``), their colour, what its style appends.
_WATCH_TEXTS = """async ms => {
    const seen = [], start = performance.now();
    const note = el => {
        const old = el.querySelector('.pe-old');
        seen.push([performance.now() - start, el.className,
                   el.textContent.length - (old ? old.textContent.length : 0),
                   getComputedStyle(el).color, getComputedStyle(el, '::after').content]);
    };
    const observer = new MutationObserver(records => records.forEach(r => r.addedNodes.forEach(n => {
        if (n.nodeType !== 1) return;
        [n, ...n.querySelectorAll('.pe-gen')].filter(e => e.matches('.pe-gen-growing, .pe-gen-pruned'))
            .forEach(note);
    })));
    observer.observe(document.body, {childList: true, subtree: true});
    await new Promise(r => setTimeout(r, ms));
    observer.disconnect();
    return seen;
}"""


def test_the_new_pruned_text_shows_its_first_tokens_at_once_then_grows(app_url):
    """ui.generation draws the new text's first token with the next-token chart, right after the prompt's
    pass, as ``pe-gen-growing`` (not greyed, ending in an ellipsis), then the whole text as ``pe-gen-pruned``.
    """
    with _browser_page(1000) as page:
        page.goto(app_url)
        page.locator(".pe-gen-pruned").wait_for(timeout=WAIT_MS)
        _settle(page)
        tokens = page.locator('.st-key-prune_new_tokens input[type="range"]')
        tokens.focus()
        page.keyboard.press("End")  # 120 tokens: a text that takes a while to generate
        _settle(page)
        assert tokens.input_value() == "120"
        normal = page.locator(".pe-gen-dense").evaluate("el => getComputedStyle(el).color")
        slider = page.locator('.st-key-sidebar_sparsity input[type="range"]')
        slider.focus()
        page.keyboard.press("PageUp")
        seen = page.evaluate(_WATCH_TEXTS, 4000)
        _settle(page)
    kinds = [("growing" if "pe-gen-growing" in cls else "pruned") for _, cls, *_ in seen]
    assert "growing" in kinds and kinds[-1] == "pruned", seen
    assert kinds.index("growing") < kinds.index("pruned")
    growing = [entry for entry, kind in zip(seen, kinds, strict=True) if kind == "growing"]
    whole = seen[-1]
    assert 0 < growing[0][2] < whole[2]  # the first tokens, not the whole text
    assert all(color == normal for _, _, _, color, _ in growing)  # new words: not greyed
    assert all("…" in after for *_, after in growing) and "…" not in whole[4]
