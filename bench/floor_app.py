"""The floor for bench/browser.py: the least a Streamlit page with the app's moving parts can cost.

    streamlit run bench/floor_app.py

One sidebar slider (same label, range and key as the app's "Global sparsity"), one text that repeats its
value, and one Plotly histogram of fixed random data (bins computed here, as the app computes its |w| bins)
with a vertical line at the slider's position. No model, no cache, no computation worth the name: what a
step costs here is Streamlit's rerun, the transfer and the drawing alone.
"""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

st.set_page_config(page_title="Floor", layout="wide")

percent = st.sidebar.slider(
    "Global sparsity", min_value=0, max_value=100, step=1, format="%d%%", key="sidebar_sparsity"
)
st.write(f"Floor page: the slider stands at {percent}%.")

magnitudes = np.abs(np.random.default_rng(0).standard_normal(20_000))
counts, edges = np.histogram(magnitudes, bins=60)
cut = float(np.quantile(magnitudes, percent / 100.0))
fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges)))
fig.add_vline(
    x=cut, line=dict(color="crimson", width=2, dash="dash"), annotation_text=f"{percent}%: {cut:.4g}"
)
fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="|w|", yaxis_title="count")
st.plotly_chart(fig, key="floor_histogram")
