"""Recipes: a recipe reproduces the masks bit for bit, refuses another model or an unknown layer and leaves
the session as it was, and every validation error names the field and the reason."""

from __future__ import annotations

import pytest
import yaml

from prune_explorer.models.dense import DenseModel
from prune_explorer.models.layers import DEFAULT_KINDS, select
from prune_explorer.plans import export, recipe
from prune_explorer.plans.apply import apply_recipe
from prune_explorer.plans.recipe import RecipeError
from prune_explorer.plans.recipe_capture import recipe_from_state
from prune_explorer.plans.recipe_io import parse_recipe, recipe_yaml
from prune_explorer.pruning import allocation
from prune_explorer.pruning.calibration import CalibrationSpec, calibration_batch
from prune_explorer.pruning.policies import MagnitudeSettings
from prune_explorer.pruning.prune import prune_masks
from prune_explorer.pruning.settings import PruneSettings, apply_result, apply_settings, prune_settings
from prune_explorer.state import PruningState
from prune_explorer.texts import calibration_text
from tests.support.models import tiny_model
from tests.support.plans import assert_same_state, same_bits

USER_TEXT = "The quick brown fox jumps over the lazy dog, and the dog sleeps on. " * 40


def round_trip(state: PruningState, settings, text: str | None = None) -> recipe.Recipe:
    """The recipe of what ``settings`` applied, through YAML text and back."""
    made = recipe_from_state(state, settings, calibration_text=text)
    again = parse_recipe(recipe_yaml(made))
    assert again == made
    return again


def user_batch(dense: DenseModel):
    return calibration_batch(dense.tokenizer, USER_TEXT, seq_len=32, n_sequences=6, source="pasted text")


CASES = {
    "magnitude uniform + override": (
        MagnitudeSettings(0.5, overrides={"model.layers.0.mlp.up_proj": 0.8}),
        False,
    ),
    "magnitude global": (MagnitudeSettings(0.6, policy="global"), False),
    "magnitude threshold": (MagnitudeSettings(policy="threshold", threshold=0.02), False),
    "magnitude 2:4": (prune_settings(MagnitudeSettings(0.5), "magnitude", "2:4"), False),
    "magnitude heads": (prune_settings(MagnitudeSettings(0.25), "magnitude", "heads"), False),
    "random": (PruneSettings(0.4, method="random", seed=7), False),
    "wanda, user text": ("wanda", True),
    "sparsegpt 2:4, built-in text": ("sparsegpt", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_recipe_reproduces_the_masks_bit_for_bit(case, llama_dense, one_thread):
    settings, user = CASES[case]
    text, batch = None, None
    if isinstance(settings, str):  # the app's path: a calibration batch known by its key
        text = USER_TEXT if user else calibration_text("stories")
        batch = (
            user_batch(llama_dense)
            if user
            else calibration_batch(llama_dense.tokenizer, text, 64, 4, source="built-in stories text")
        )
        pattern = "2:4" if settings == "sparsegpt" else "unstructured"
        settings = prune_settings(MagnitudeSettings(0.5), settings, pattern, batch)
        assert isinstance(settings.calibration, CalibrationSpec)
    app = PruningState(llama_dense)
    apply_settings(app, settings, batch)
    plan = round_trip(app, settings, text if user else None)
    fresh = PruningState(llama_dense)
    apply_recipe(fresh, plan, USER_TEXT if user else None)
    assert_same_state(app, fresh)


def test_the_cli_calibration_path_records_its_text(llama_dense):
    """``prune --calib-text`` hands the method a text (cut into 128-token sequences): recorded, rebuilt."""
    settings = prune_settings(MagnitudeSettings(0.5), "wanda", "unstructured")
    app = PruningState(llama_dense)
    apply_settings(app, settings, USER_TEXT)
    plan = round_trip(app, settings, USER_TEXT)
    assert plan.calibration.builtin is None and plan.calibration.seq_len == 128
    with pytest.raises(RecipeError, match="calibrated on a user text"):
        apply_recipe(PruningState(llama_dense), plan)
    with pytest.raises(RecipeError, match="sha256"):
        apply_recipe(PruningState(llama_dense), plan, USER_TEXT + "!")
    fresh = PruningState(llama_dense)
    apply_recipe(fresh, plan, USER_TEXT)
    assert_same_state(app, fresh)


@pytest.mark.parametrize("method", ["random", "wanda"])
def test_per_layer_sparsities_of_a_method_come_back_bit_for_bit(method, llama_dense):
    """An allocation (here by hand) given to ``prune_masks`` per layer, recorded and applied again."""
    settings = prune_settings(MagnitudeSettings(0.5), method, "unstructured")
    shares = {layer.name: (0.3 if "mlp" in layer.name else 0.65) for layer in llama_dense.layers[1:-1]}
    app = PruningState(llama_dense)
    apply_result(app, prune_masks(llama_dense, method, sparsity=0.5, layer_sparsity=shares))
    made = recipe_from_state(app, settings, layer_sparsity=shares, allocation="owl")
    plan = parse_recipe(recipe_yaml(made))
    assert plan.allocation.name == "owl" and plan.allocation.layers == shares
    fresh = PruningState(llama_dense)
    apply_recipe(fresh, plan)
    assert_same_state(app, fresh)
    assert fresh.sparsity("model.layers.1.mlp.up_proj") == pytest.approx(0.3, abs=0.02)


def test_a_recipe_for_another_model_or_layer_is_refused_and_nothing_changes(llama_dense, char_tokenizer):
    state = PruningState(llama_dense)
    apply_settings(state, MagnitudeSettings(0.3))
    before = {layer.name: state.weight(layer.name).clone() for layer in llama_dense.layers}
    other = DenseModel(tiny_model("llama", seed=1), char_tokenizer, name="other")
    foreign = recipe_from_state(PruningState(other), MagnitudeSettings(0.7))
    with pytest.raises(RecipeError, match="another model"):
        apply_recipe(state, foreign)
    mine = recipe_from_state(state, MagnitudeSettings(0.3))
    layers = dict(mine.allocation.layers) | {"model.layers.7.mlp.up_proj": 0.5}
    unknown = mine.model_copy(update={"allocation": mine.allocation.model_copy(update={"layers": layers})})
    with pytest.raises(RecipeError, match=r"does not have: model\.layers\.7\.mlp\.up_proj"):
        apply_recipe(state, unknown)
    for layer in llama_dense.layers:
        assert same_bits(state.weight(layer.name), before[layer.name])


def test_every_validation_error_names_the_field(llama_dense):
    good = yaml.safe_load(recipe_yaml(recipe_from_state(PruningState(llama_dense), MagnitudeSettings(0.5))))
    name = "model.layers.0.self_attn.q_proj"

    def error(data) -> str:
        with pytest.raises(RecipeError) as info:
            parse_recipe(data if isinstance(data, str) else yaml.safe_dump(data))
        return str(info.value)

    assert "not valid YAML at line 2" in error("method: wanda\n  pattern: [unclosed\n")
    assert "must be a YAML mapping" in error("- just\n- a list\n")
    bad = good | {"allocation": good["allocation"] | {"layers": {name: 1.5}}}
    assert f"allocation.layers['{name}']: Input should be less than or equal to 1" in error(bad)
    assert "method: unknown method 'obs'; choose one of magnitude" in error(good | {"method": "obs"})
    assert "pattern:" in error(good | {"pattern": "3:2"})
    assert "methd: is not a recipe field" in error(good | {"methd": "wanda"})
    assert "model.sha256: String should match pattern" in error(good | {"model": {"id": "x", "sha256": "zz"}})
    missing = {k: v for k, v in good.items() if k != "allocation"}
    assert "allocation: is missing" in error(missing)
    assert "calibration: Wanda needs calibration data" in error(good | {"method": "wanda"})
    assert "layer_kinds: unknown layer kinds ['attn_z']" in error(good | {"layer_kinds": ["attn_z"]})


def test_numbers_out_of_range_name_the_field_in_plain_words(llama_dense):
    good = yaml.safe_load(recipe_yaml(recipe_from_state(PruningState(llama_dense), MagnitudeSettings(0.5))))
    name = next(iter(good["allocation"]["layers"]))

    def error(data) -> str:
        with pytest.raises(RecipeError) as info:
            parse_recipe(yaml.safe_dump(data))
        return str(info.value)

    nan = good | {"allocation": good["allocation"] | {"layers": {name: float("nan")}}}
    assert f"allocation.layers['{name}']: Input should be a finite number" in error(nan)
    inf = good | {"allocation": good["allocation"] | {"name": "threshold", "threshold": float("inf")}}
    assert "allocation.threshold: Input should be a finite number" in error(inf)
    assert f"seed: Input should be less than or equal to {recipe.SEED_MAX}" in error(good | {"seed": 2**64})
    assert "seed: Input should be greater than or equal to 0" in error(good | {"seed": -1})


def test_a_calibration_the_text_cannot_give_is_refused_by_field_and_nothing_changes(llama_dense):
    state = PruningState(llama_dense)
    apply_settings(state, MagnitudeSettings(0.3))
    before = {layer.name: state.weight(layer.name).clone() for layer in llama_dense.layers}
    made = recipe_from_state(
        PruningState(llama_dense), prune_settings(MagnitudeSettings(0.5), "wanda", "unstructured")
    )
    calib = made.calibration

    def edited(**fields) -> recipe.Recipe:
        return made.model_copy(update={"calibration": calib.model_copy(update=fields)})

    with pytest.raises(
        RecipeError, match=r"calibration\.n_sequences: the calibration text gives \d+ sequences"
    ):
        apply_recipe(state, edited(n_sequences=10**6))
    with pytest.raises(RecipeError, match=r"calibration\.ids_sha1: .* changed by hand"):
        apply_recipe(state, edited(ids_sha1="0" * 40))
    for layer in llama_dense.layers:
        assert same_bits(state.weight(layer.name), before[layer.name])


def budget_settings(dense: DenseModel, bounds: tuple[float, float] | None) -> PruneSettings:
    """The slider path at 50% under the budget over made-up curves (steeper for later layers), bounded."""
    layers = select(dense.layers, DEFAULT_KINDS)
    curves = {la.name: [(0.0, 0.0), (0.5, 0.1 * (i + 1)), (0.9, (i + 1) ** 2)] for i, la in enumerate(layers)}
    basis = allocation.budget_basis(layers, curves)
    return PruneSettings(0.5, allocation="budget", basis=basis, budget_bounds=bounds)


def test_the_budgets_bounds_are_recorded_and_the_recipe_reproduces_them(llama_dense, tmp_path):
    state = PruningState(llama_dense)
    settings = budget_settings(llama_dense, (0.4, 0.6))
    apply_settings(state, settings)
    shares = settings.layer_sparsity
    assert min(shares.values()) >= 0.4 - 1e-9 and max(shares.values()) <= 0.6 + 1e-9
    assert max(shares.values()) - min(shares.values()) > 0.1  # the bound is what stops it
    made = round_trip(state, settings)
    assert made.allocation.name == "budget" and made.allocation.bounds == (0.4, 0.6)
    assert "bounds:\n  - 0.4\n  - 0.6" in recipe_yaml(made)
    fresh = PruningState(llama_dense)
    apply_recipe(fresh, made)
    assert_same_state(state, fresh)
    card = export.model_card(state, made, None, "none")
    assert "| Allocation | budget, 50.00% asked, each layer within 40.00%–60.00% |" in card
    unbounded = budget_settings(llama_dense, None)
    apply_settings(state, unbounded)
    assert recipe_from_state(state, unbounded).allocation.bounds is None


def test_bounds_out_of_range_or_off_the_average_name_the_field(llama_dense):
    state = PruningState(llama_dense)
    settings = budget_settings(llama_dense, (0.4, 0.6))
    apply_settings(state, settings)
    good = yaml.safe_load(recipe_yaml(recipe_from_state(state, settings)))

    def error(bounds, name: str = "budget") -> str:
        data = good | {"allocation": good["allocation"] | {"bounds": bounds, "name": name}}
        with pytest.raises(RecipeError) as info:
            parse_recipe(yaml.safe_dump(data))
        return str(info.value)

    assert "allocation.bounds[1]: Input should be less than or equal to 1" in error([0.4, 1.2])
    assert "allocation.bounds: the average sparsity 0.5 must lie within [0.6, 0.7]" in error([0.6, 0.7])
    assert "allocation.bounds: only the budget allocation has bounds, not owl" in error([0.4, 0.6], "owl")
    assert "allocation.bounds: Tuple should have at most 2 items" in error([0.4, 0.5, 0.6])
