"""The Streamlit app through AppTest: every page, the shared sidebar, model loading and session isolation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT = 120


pytestmark = pytest.mark.usefixtures("one_thread", "app_navigation")


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return values[0]


def generation(at: AppTest, side: str) -> str:
    """The visible text of the dense or pruned continuation."""
    bodies = [h.value for h in at.html if f"pe-gen-{side}" in h.value]
    assert len(bodies) == 1
    return re.sub(r"<[^>]+>", "", bodies[0])


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def threshold_caption(at: AppTest) -> float:
    match = re.search(r"Current threshold for .*?\|w\| ≤ ([0-9.]+)", captions(at))
    assert match, captions(at)
    return float(match.group(1))


def set_sparsity(at: AppTest, percent: int) -> AppTest:
    at.slider(key="sidebar_sparsity").set_value(percent).run()
    assert not at.exception, at.exception
    return at


def weight_bytes(dense) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().view(torch.uint8) for n, p in dense.model.named_parameters()}


def test_prune_page_follows_the_slider():
    at = start()
    assert metric(at, "Pruned (selected layers)") == "0.0%"
    assert metric(at, "KL(dense ‖ pruned), next token") == "0.0000 nats"
    assert generation(at, "dense") == generation(at, "pruned")
    assert metric(at, "Dense perplexity") == metric(at, "Pruned perplexity")

    set_sparsity(at, 50)
    assert metric(at, "Pruned (selected layers)") == "50.0%"
    assert float(metric(at, "KL(dense ‖ pruned), next token").split()[0]) > 0
    assert generation(at, "dense") != generation(at, "pruned")
    assert float(metric(at, "Pruned perplexity")) > float(metric(at, "Dense perplexity"))
    assert "Kernel that ran" in "".join(i.value for i in at.info)
    assert "They part at new token" in captions(at)


def test_reset_to_dense_restores_exact_weights():
    at = start()
    state = at.session_state["pruning_state"]
    set_sparsity(at, 60)
    assert any(state.is_pruned(layer.name) for layer in state.dense.layers)

    at.button(key="sidebar_reset").click().run()
    assert not at.exception
    assert at.slider(key="sidebar_sparsity").value == 0
    assert metric(at, "Pruned (selected layers)") == "0.0%"
    assert generation(at, "dense") == generation(at, "pruned")
    for layer in state.dense.layers:
        current = state.weight(layer.name).contiguous().view(torch.uint8)
        dense = layer.weight(state.dense.model).contiguous().view(torch.uint8)
        assert torch.equal(current, dense), layer.name


def test_layers_page_table_histogram_and_overview():
    at = start()
    at.switch_page("pages/layers.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert not table["kind"].isin(["embedding", "LM head"]).any()
    assert (table["sparsity %"] == 0).all()
    assert threshold_caption(at) == 0.0

    set_sparsity(at, 50)
    table = at.dataframe[0].value
    assert table["sparsity %"].round(1).eq(50.0).all()
    assert threshold_caption(at) > 0.0
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # histogram and the block × kind overview
    assert '"type":"line"' in charts[0].proto.spec.replace(" ", "")  # the threshold line

    at.toggle(key="layers_log_x").set_value(True).run()
    at.toggle(key="layers_log_y").set_value(True).run()
    assert not at.exception, at.exception

    chosen = "model.layers.2.mlp.down_proj"
    at.selectbox(key="layers_layer").set_value(chosen).run()
    assert "Current threshold for 2 · mlp.down_proj" in captions(at)
    at.toggle(key="sidebar_extras").set_value(True).run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value["kind"].eq("embedding").any()
    assert at.selectbox(key="layers_layer").value == chosen  # the choice survives a new layer list


def test_learn_page_views_follow_the_slider():
    at = start()
    at.switch_page("pages/learn.py").run()
    assert not at.exception, at.exception
    assert metric(at, "Weights removed here") == "0%"
    assert "0 of 288 weights in this corner are zero now." in captions(at)

    set_sparsity(at, 40)
    assert metric(at, "Weights removed here") == "40%"
    assert float(metric(at, "KL(dense ‖ pruned), next token")) > 0
    assert "0 of 288 weights" not in captions(at)
    assert "this app does not do that yet" in " ".join(s.value for s in at.subheader)


def test_global_policy_and_overrides():
    at = start()
    at.radio(key="sidebar_policy").set_value("global").run()
    set_sparsity(at, 50)
    assert metric(at, "Pruned (selected layers)") == "50.0%"
    state = at.session_state["pruning_state"]
    sparsities = {round(state.sparsity(layer.name), 3) for layer in state.dense.layers if layer.block >= 0}
    assert len(sparsities) > 1  # one global cut-off leaves layers at different sparsities

    name = "model.layers.0.mlp.up_proj"
    at.multiselect(key="sidebar_override_layers").set_value([name]).run()
    at.slider(key="sidebar_override_percent").set_value(90).run()
    assert not at.exception, at.exception
    assert state.sparsity(name) == pytest.approx(0.9, abs=1e-3)


def test_threshold_out_of_range_keeps_previous_state():
    at = start()
    set_sparsity(at, 30)
    state = at.session_state["pruning_state"]

    at.radio(key="sidebar_policy").set_value("threshold").run()
    start_threshold = at.number_input(key="sidebar_threshold").value
    assert start_threshold > 0  # starts near the pruning the user had, not at "prune nothing"
    shown = metric(at, "Pruned (selected layers)")
    assert shown != "0.0%"
    before = {layer.name: state.pruned_count(layer.name) for layer in state.dense.layers}

    at.number_input(key="sidebar_threshold").set_value(100.0).run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "above the largest |w|" in errors and "previous pruning is kept" in errors
    assert {layer.name: state.pruned_count(layer.name) for layer in state.dense.layers} == before
    assert metric(at, "Pruned (selected layers)") == shown

    at.number_input(key="sidebar_threshold").set_value(start_threshold / 2).run()
    assert not at.error
    assert metric(at, "Pruned (selected layers)") != shown


@pytest.mark.parametrize(
    ("source", "message"),
    [("no-such-org/no-such-model-xyz", "hub id"), ("/no/such/folder/anywhere", "does not exist")],
)
def test_failed_load_keeps_previous_model(source, message):
    at = start()
    set_sparsity(at, 20)
    at.text_input(key="sidebar_source").input(source)
    at.button(key="sidebar_load").click().run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Could not load" in errors and message in errors and "Still using stories260K" in errors
    assert "Active model: **stories260K**" in captions(at)
    assert metric(at, "Pruned (selected layers)") == "20.0%"

    set_sparsity(at, 40)
    assert metric(at, "Pruned (selected layers)") == "40.0%"
    assert generation(at, "dense") != generation(at, "pruned")


def _assert_load_refused(at: AppTest, source: str, message: str) -> None:
    at.text_input(key="sidebar_source").input(source)
    at.button(key="sidebar_load").click().run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Could not load" in errors and message in errors and "Still using stories260K" in errors
    assert metric(at, "Pruned (selected layers)") == "20.0%"
    set_sparsity(at, 40)
    assert metric(at, "Pruned (selected layers)") == "40.0%"


def test_corrupt_checkpoint_is_refused_and_the_session_goes_on(tmp_path):
    folder = tmp_path / "corrupt"
    _tiny_model("llama").save_pretrained(folder)
    _tokenizer(folder, chat=False)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    at = start()
    set_sparsity(at, 20)
    _assert_load_refused(at, str(folder), "could not load the weights")


def test_model_too_big_for_free_memory_is_refused_before_loading(tmp_path, monkeypatch):
    import prune_explorer.models as models

    folder = tmp_path / "big"
    _tiny_model("llama").save_pretrained(folder)
    _tokenizer(folder, chat=False)
    at = start()
    set_sparsity(at, 20)
    monkeypatch.setattr(models, "available_memory_bytes", lambda: 1000)
    _assert_load_refused(at, str(folder), "of memory is free")


def test_sessions_are_isolated_and_the_dense_model_is_unchanged():
    first, second = start(), start()
    dense = first.session_state["pruning_state"].dense
    assert second.session_state["pruning_state"].dense is dense  # one cached model for the process
    snapshot = weight_bytes(dense)

    set_sparsity(first, 70)
    second.run()
    assert metric(first, "Pruned (selected layers)") == "70.0%"
    assert metric(second, "Pruned (selected layers)") == "0.0%"
    assert generation(second, "dense") == generation(second, "pruned")
    assert generation(first, "dense") == generation(second, "dense")
    after = weight_bytes(dense)
    assert snapshot.keys() == after.keys()
    assert all(torch.equal(snapshot[n], after[n]) for n in snapshot)


CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


def _tokenizer(folder: Path, chat: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from prune_explorer.texts import calibration_text

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=60)
    tok.train_from_iterator(calibration_text("shakespeare").splitlines(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def _tiny_model(arch: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=300, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
        )  # fmt: skip
        return LlamaForCausalLM(config)
    config = GPT2Config(
        vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2
    )
    return GPT2LMHeadModel(config)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_load_a_saved_folder_from_the_sidebar(tmp_path, arch):
    folder = tmp_path / arch
    _tiny_model(arch).save_pretrained(folder)
    _tokenizer(folder, chat=arch == "llama")  # the Llama twin also tries the chat-template path

    at = start()
    set_sparsity(at, 25)
    at.text_input(key="sidebar_source").input(str(folder))
    at.button(key="sidebar_load").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert f"Active model: **{folder}**" in captions(at)
    assert at.slider(key="sidebar_sparsity").value == 0  # a model change starts dense
    assert metric(at, "Pruned (selected layers)") == "0.0%"
    assert at.selectbox(key="sidebar_model").value is None

    assert ("chat template" in captions(at)) == (arch == "llama")
    set_sparsity(at, 50)
    assert metric(at, "Pruned (selected layers)") == "50.0%"
    assert float(metric(at, "KL(dense ‖ pruned), next token").split()[0]) > 0
    kinds = set(at.pills(key="sidebar_kinds").value)
    assert ("attn_qkv" in kinds) == (arch == "gpt2")
    for page in ("pages/layers.py", "pages/learn.py", "pages/prune.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)

    at.selectbox(key="sidebar_model").set_value("stories260K").run()
    assert not at.exception, at.exception
    assert "Active model: **stories260K**" in captions(at)


def test_big_models_wait_for_buttons(monkeypatch):
    import sys

    at = start()
    monkeypatch.setattr(sys.modules["ui.outputs"], "SMALL_MODEL", 0)  # treat stories260K as a big model
    set_sparsity(at, 35)
    labels = {b.label for b in at.button}
    assert {"Time a forward pass", "Compute perplexity", "Run the sweep"} <= labels
    assert "Press the button to score" in captions(at)
    assert not [m for m in at.metric if m.label == "Pruned perplexity"]

    at.button(key="prune_ppl").click().run()
    assert not at.exception, at.exception
    assert float(metric(at, "Pruned perplexity")) > float(metric(at, "Dense perplexity"))
    at.button(key="prune_time").click().run()
    assert metric(at, "Pruned / dense").endswith("×")

    set_sparsity(at, 45)  # results belong to the settings they were measured at
    assert not [m for m in at.metric if m.label == "Pruned perplexity"]

    at.switch_page("pages/learn.py").run()
    assert not at.exception, at.exception
    at.button(key="learn_time").click().run()
    assert not at.exception, at.exception
    assert metric(at, "Pruned forward").endswith("ms")
