"""Prune Explorer's server: ``streamlit run app.py``.

Streamlit finds the ``st.App`` below and serves ``explorer.py`` (the shared sidebar and the pages), after a
warm-up that runs before the server accepts its first browser (``ui.warmup``: the imports of torch,
transformers and the app's modules, the built-in model's loader and the slider kernels, about 5 s on two
cores). A plain Streamlit script runs no code until a browser connects, so the first visitor used to wait
for all of it.
"""

import asyncio
from contextlib import asynccontextmanager

import streamlit as st


@asynccontextmanager
async def _warm_up(_app):
    from ui import warmup

    await asyncio.to_thread(warmup.run)
    yield


app = st.App("explorer.py", lifespan=_warm_up)
