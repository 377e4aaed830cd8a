"""Support for driving the app headlessly (AppTest) from tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from streamlit.runtime.pages_manager import PagesManager


@contextmanager
def navigation_not_pages_folder() -> Iterator[None]:
    """Make AppTest route through app.py's ``st.navigation`` on every rerun, as a real server does.

    AppTest (Streamlit 1.67) re-detects the legacy ``pages/`` folder before every run, so a rerun after the
    first would execute the page file alone, without app.py. A real server stops doing that once
    ``st.navigation`` has run.
    """
    init = PagesManager.__init__

    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = patched
    try:
        yield
    finally:
        PagesManager.__init__ = init
