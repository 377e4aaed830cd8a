"""Scenes as data (``prune_explorer.scenes``): the query string round trip, every validation error, and the
built-in scenes valid for the method registry."""

from __future__ import annotations

import pytest

from prune_explorer.models.loading import BUILTINS
from prune_explorer.pruning.methods import METHODS, supported_patterns
from prune_explorer.pruning.patterns import PATTERNS
from prune_explorer.scenes import (
    BUILTIN_SCENES,
    KEYS,
    PAGES,
    Scene,
    SceneError,
    has_scene,
    scene_from_query,
    scene_to_query,
)

SCENES = [
    Scene(),
    Scene(model="smollm2-135m", page="speed", method="wanda", pattern="neurons", sparsity=70),
    Scene(method="sparsegpt", pattern="2:4"),
    Scene(policy="threshold", sparsity=12, threshold=0.0125),
    Scene(policy="global", sparsity=100, kinds=("mlp_up", "attn_q"), extras=True),
    Scene(page="allocation", method="wanda", sparsity=70, allocation="owl", owl_m=7.0, owl_lam=0.15),
    Scene(sparsity=60, allocation="budget"),
    Scene(sparsity=70, allocation="budget", budget_dev=0.25),
    Scene(sparsity=70, allocation="budget", budget_dev=1.0),
]


@pytest.mark.parametrize("scene", SCENES)
def test_round_trip(scene):
    query = scene_to_query(scene)
    assert set(query) <= set(KEYS) and all(isinstance(v, str) for v in query.values())
    assert scene_from_query(query) == scene


def test_query_names_the_six_main_fields_and_no_defaults_beyond():
    query = scene_to_query(Scene(method="wanda", sparsity=30))
    assert query == {
        "model": "stories260K",
        "page": "prune",
        "method": "wanda",
        "pattern": "unstructured",
        "policy": "uniform",
        "sparsity": "30",
    }


def test_missing_fields_take_the_defaults_and_other_keys_are_ignored():
    scene = scene_from_query({"method": "wanda", "sparsity": "30", "utm_source": "mail"})
    assert scene == Scene(method="wanda", sparsity=30)
    assert not has_scene({"utm_source": "mail"}) and has_scene({"page": "speed"})


def test_lenient_spelling():
    scene = scene_from_query({"sparsity": " 40% ", "pattern": "Neurons", "extras": "true"})
    assert (scene.sparsity, scene.pattern, scene.extras) == (40, "neurons", True)
    assert scene_from_query({"kinds": "attn_q, mlp_up,"}).kinds == ("attn_q", "mlp_up")


def test_n_m_fixes_the_sparsity():
    assert Scene(pattern="2:4", sparsity=10).sparsity == 50
    assert scene_from_query({"pattern": "4:8"}).sparsity == 50


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"model": "gpt-5"}, "model", ["gpt-5", *BUILTINS]),
        ({"model": "./my-model"}, "model", ["./my-model"]),
        ({"page": "home"}, "page", ["home", *PAGES]),
        ({"method": "obs"}, "method", ["obs", *METHODS]),
        ({"pattern": "3:9:1"}, "pattern", ["3:9:1", *PATTERNS]),
        ({"method": "sparsegpt", "pattern": "heads"}, "pattern", ["SparseGPT", "heads", "2:4", "4:8"]),
        ({"policy": "median"}, "policy", ["median", "uniform", "global", "threshold"]),
        ({"sparsity": "101"}, "sparsity", ["between 0 and 100", "101"]),
        ({"sparsity": "-5"}, "sparsity", ["-5"]),
        ({"sparsity": "0.5"}, "sparsity", ["whole percent", "0.5"]),
        ({"sparsity": "half"}, "sparsity", ["half"]),
        ({"policy": "threshold", "threshold": "abc"}, "threshold", ["number", "abc"]),
        ({"policy": "threshold", "threshold": "-1"}, "threshold", ["-1"]),
        ({"policy": "threshold", "threshold": "nan"}, "threshold", ["finite"]),
        ({"threshold": "0.1"}, "threshold", ["policy=threshold", "policy=uniform"]),
        ({"kinds": "attn_q,wings"}, "kinds", ["wings", "attn_q", "mlp_down"]),
        ({"kinds": "embedding"}, "kinds", ["embedding"]),  # extras=1 says that, not kinds
        ({"kinds": ","}, "kinds", ["at least one"]),
        ({"kinds": "attn_q,attn_q"}, "kinds", ["twice"]),
        ({"extras": "maybe"}, "extras", ["maybe"]),
        ({"allocation": "even"}, "allocation", ["even", "uniform", "owl", "budget"]),
        ({"allocation": "owl", "owl_lam": "0.9"}, "owl_lam", ["between 0 and 0.5", "0.9"]),
        ({"allocation": "owl", "owl_m": "0"}, "owl_m", ["positive"]),
        ({"allocation": "owl", "owl_m": "five"}, "owl_m", ["number", "five"]),
        ({"owl_lam": "0.2"}, "owl_lam", ["allocation=owl"]),
        ({"allocation": "budget", "budget_dev": "1.5"}, "budget_dev", ["between 0 and 1", "1.5"]),
        ({"allocation": "budget", "budget_dev": "nan"}, "budget_dev", ["between 0 and 1"]),
        ({"allocation": "budget", "budget_dev": "wide"}, "budget_dev", ["number", "wide"]),
        ({"budget_dev": "0.2"}, "budget_dev", ["allocation=budget"]),
    ],
)
def test_each_bad_field_is_named_with_why(params, field, words):
    with pytest.raises(SceneError) as info:
        scene_from_query(params)
    assert info.value.field == field
    message = str(info.value)
    assert message.startswith(f"{field}: ")
    for word in words:
        assert word in message, (word, message)
    assert isinstance(info.value, ValueError)


def test_a_scene_built_in_code_is_validated_too():
    with pytest.raises(SceneError, match="^sparsity: a whole percent"):
        Scene(sparsity=0.5)  # type: ignore[arg-type]
    with pytest.raises(SceneError, match="^sparsity: a whole percent"):
        Scene(sparsity=True)  # type: ignore[arg-type]


def test_supported_patterns_follow_the_registry():
    for name, method in METHODS.items():
        offered = supported_patterns(name)
        assert "unstructured" in offered
        assert ("neurons" in offered) == ("neurons" in method.patterns)
    assert supported_patterns("sparsegpt") == ("unstructured", "2:4", "4:8")


def test_builtin_scenes_are_valid_and_make_the_points():
    assert 4 <= len(BUILTIN_SCENES) <= 6
    names = [b.name for b in BUILTIN_SCENES]
    assert len(set(names)) == len(names)
    for builtin in BUILTIN_SCENES:
        scene = builtin.scene
        assert scene.method in METHODS and scene.pattern in supported_patterns(scene.method)
        assert scene_from_query(scene_to_query(scene)) == scene
        assert builtin.shows and "\n" not in builtin.shows and len(builtin.shows) < 110
    by_name = {b.name: b.scene for b in BUILTIN_SCENES}
    assert by_name["Magnitude collapses at 50%"] == Scene(
        model="smollm2-135m", method="magnitude", sparsity=50
    )
    assert by_name["Wanda holds at 50%"] == Scene(model="smollm2-135m", method="wanda", sparsity=50)
    assert by_name["Zeros in a dense matmul buy no time"].page == "speed"
    assert by_name["Whole neurons do"].pattern == "neurons"
    assert any(b.scene.model == "stories260K" for b in BUILTIN_SCENES)  # one to try without a download
