"""Save & export: the plan as a recipe (download, or upload one to apply), and the pruned model taken away."""

import streamlit as st

from ui import export_view, recipe_view, session

state = session.state()
dense = state.dense
trained = session.trained()  # a trained model in force: exported as trained weights, with no recipe

st.title("Save & export")
st.caption(f"What is applied: {session.applied_words()}.")

st.subheader("Recipe")
st.caption(
    "The whole plan in one YAML file: the model and the sha256 of its weights, method, pattern, the sparsity "
    "of every layer, layer kinds, calibration and the project version. Loading it gives the same masks, bit "
    "for bit (also from the command line: `python -m prune_explorer apply recipe.yaml --out DIR`)."
)
recipe, why = recipe_view.current_recipe()
recipe_view.download(recipe, why, dense)
recipe_view.uploader()

st.subheader("Exports")
if recipe is None and trained is None:
    st.info(f"{why} Prune something in the sidebar first.")
else:
    hf, masks, compressor = st.columns(3)
    with hf:
        st.markdown("**Transformers folder** (zip)")
        st.caption(export_view.hf_note(trained))
        name = f"{export_view.hf_name(trained)}.zip"
        export_view.prepare(
            "hf", "the transformers folder", lambda: export_view.hf_zip(recipe, trained), name
        )
        export_view.offer("hf", "model (zip)", "application/zip")
    with masks:
        st.markdown("**Masks alone** (bit-packed safetensors)")
        st.caption(export_view.MASKS_NOTE + (export_view.TRAINED_MASKS_NOTE if trained else ""))
        export_view.prepare("masks", "the masks", export_view.masks_file, f"{dense.name}-masks.safetensors")
        export_view.offer("masks", "masks", "application/octet-stream")
    with compressor:
        st.markdown("**llm-compressor recipe** (YAML)")
        export_view.llmcompressor_offer(recipe, trained)

    st.subheader("Sizes on disk")
    weights = "the trained weights" if trained else "the pruned weights"
    st.caption(
        f"Every form written as a safetensors file of {weights} and measured; layers that are not pruned "
        "stay dense."
    )
    export_view.prepare("sizes", "the sizes", export_view.sizes_table)
    export_view.failure("sizes")
    table = export_view.prepared("sizes")
    if table is not None:
        st.dataframe(
            table[0],
            hide_index=True,
            key="export_sizes",
            column_config={"vs dense": st.column_config.NumberColumn(format="%.3f×")},
        )
