"""How the app words a pruning choice: method and pattern labels, one-line descriptions of what is applied,
and the captions that explain a chart for the settings applied. Plain functions of settings (no widgets).
"""

from __future__ import annotations

from typing import Any

from prune_explorer.pruning.methods import METHODS
from prune_explorer.pruning.patterns import parse_pattern
from prune_explorer.pruning.policies import MagnitudeSettings

SHORT_LABELS = {name: method.label for name, method in METHODS.items()}
METHOD_LABELS = {
    "magnitude": "Magnitude |w|",
    "random": "Random (baseline)",
    "wanda": "Wanda |w|·‖x‖",
    "sparsegpt": "SparseGPT (OBS update)",
}
PATTERN_LABELS = {
    "unstructured": "Unstructured",
    "2:4": "2:4 (keep 2 of every 4)",
    "4:8": "4:8 (keep 4 of every 8)",
    "neurons": "Whole MLP neurons",
    "heads": "Whole attention heads",
}


def describe(settings: MagnitudeSettings | None) -> str:
    """One line for people of everything applied, overrides and a typed threshold included:
    "Wanda · 2:4 · 50% · calibration 6 × 128 tokens (…)", "Magnitude |w| · uniform policy · 50% · 1 layer at
    90%", "Magnitude |w| · threshold policy · |w| ≤ 0.012"."""
    if settings is None:
        return "nothing (dense)"
    method = getattr(settings, "method", "magnitude")
    pattern = getattr(settings, "pattern", "unstructured")
    parts = [METHOD_LABELS.get(method, method)]
    if getattr(settings, "slider_path", True):
        parts.append(f"{settings.policy} policy")
        threshold = settings.policy == "threshold"
        parts.append(f"|w| ≤ {settings.threshold:.5g}" if threshold else f"{settings.sparsity:.0%}")
        parts.extend(_overrides_text(settings.overrides))
    else:
        parts += [PATTERN_LABELS.get(pattern, pattern), f"{settings.sparsity:.0%}"]
    parts.extend(_allocation_text(settings))
    calib = getattr(settings, "calibration", None)
    if calib is not None:
        parts.append(f"calibration {calib.n_sequences} × {calib.seq_len} tokens ({calib.source})")
    return " · ".join(parts)


def trained(record: Any) -> str:
    """One line for a trained model in force (a ``ui.train_job.Trained``): "trained — gradual magnitude
    unstructured to 70%, distillation, 200 steps · 69.8% of the trained layers' weights are zero" (the share
    counted on the weights written, not the schedule's target)."""
    what = record.record.summary() if record.record is not None else record.label
    if record.measured is None:
        return f"trained — {what}"
    return f"trained — {what} · {record.measured:.1%} of the trained layers' weights are zero"


def trained_short(record: Any) -> str:
    """ "trained · 70%": a trained model in force (``ui.train_job.Trained``) and its measured sparsity."""
    return "trained" if record.measured is None else f"trained · {record.measured:.0%}"


def _allocation_text(settings: MagnitudeSettings) -> list[str]:
    """ "OWL allocation (M 5, λ 0.08)", "budget allocation" where an allocation other than uniform applies."""
    name = getattr(settings, "allocation", "uniform")
    if name == "uniform" or not getattr(settings, "allocation_applies", False):
        return []
    if name == "owl":
        return [f"OWL allocation (M {settings.owl_m:g}, λ {settings.owl_lam:g})"]
    return [f"{name} allocation"]


def _overrides_text(overrides: dict[str, float]) -> list[str]:
    """ "2 layers at 90%" for each override sparsity, most common first."""
    counts: dict[float, int] = {}
    for value in overrides.values():
        counts[value] = counts.get(value, 0) + 1
    return [
        f"{n} layer{'s' * (n != 1)} at {value:.0%}"
        for value, n in sorted(counts.items(), key=lambda kv: -kv[1])
    ]


def _sweep_pattern(settings: MagnitudeSettings | None) -> str:
    pattern = getattr(settings, "pattern", "unstructured")
    return "unstructured" if parse_pattern(pattern).kind == "n:m" else pattern


def sweep_name(settings: MagnitudeSettings | None) -> str:
    """Legend name of the Prune page's sweep: "sweep" on the slider path, else "Wanda · unstructured"."""
    if settings is None or getattr(settings, "slider_path", True):
        return "sweep"
    return f"{SHORT_LABELS[settings.method]} · {_sweep_pattern(settings)}"


def sweep_caption(settings: MagnitudeSettings | None) -> str:
    """What the Prune page's sweep shows for the settings applied."""
    if settings is None or getattr(settings, "slider_path", True):
        return (
            "Each point prunes a scratch copy with your layer kinds, overrides and policy (a typed threshold "
            "sweeps as same-sparsity-per-layer). Perplexity usually stays flat, then rises steeply."
        )
    text = f"Each point prunes a scratch copy with {sweep_name(settings)} and your layer kinds."
    if parse_pattern(settings.pattern).kind == "n:m":
        text += (
            f" {settings.pattern} has one sparsity, so the curve is the same method unstructured; the "
            "diamond shows what the fixed pattern costs against a free choice of weights."
        )
    return text + " The Compare page puts several methods on one chart."


POLICY_SPREAD = {
    "uniform": "Same sparsity in every selected layer, so every cell alike.",
    "global": "One |w| threshold over all selected layers: layers whose weights are small overall lose more, "
    "layers of large weights less.",
    "threshold": "Your typed |w| threshold in every selected layer: layers with many weights below it lose "
    "more.",
}


ALLOCATION_SPREAD = {
    "owl": "OWL shares the average among blocks: blocks whose |W|·‖X‖ scores hold fewer outliers lose more, "
    "within the average ± λ (the Allocation page draws every layer).",
    "budget": "The budget shares the average where the sensitivity curves predict the least damage, so "
    "robust layers lose more and fragile ones less (the Allocation page draws every layer).",
}


def heatmap_caption(settings: MagnitudeSettings | None) -> str:
    """How the applied pruning spreads over the layers, for the Layers page's block × kind heatmap."""
    if settings is None:
        return "Nothing is pruned: every cell is 0."
    method = getattr(settings, "method", "magnitude")
    pattern = parse_pattern(getattr(settings, "pattern", "unstructured"))
    extra = " The overridden layers stand out at their own sparsity." if settings.overrides else ""
    if _allocation_text(settings) and pattern.kind == "unstructured":
        return ALLOCATION_SPREAD[settings.allocation] + extra
    if getattr(settings, "slider_path", True):
        return POLICY_SPREAD[settings.policy] + extra
    if pattern.kind == "n:m":
        return (
            f"{settings.pattern} keeps {pattern.n} of every {pattern.m} weights, so every selected layer is "
            f"at {pattern.fixed_sparsity:.0%} (columns past the last full group stay dense)."
        )
    if pattern.kind == "heads":
        return (
            "Whole attention heads go, so only attention layers change, each block's share rounded to whole "
            "heads; under grouped-query attention k and v lose less (the sidebar's notes say how much)."
        )
    if pattern.kind == "neurons":
        return "Whole MLP neurons go, so only MLP layers change, each block's share rounded to whole neurons."
    group = "every output row" if method == "wanda" else "every layer"
    return f"{SHORT_LABELS[method]} prunes the same share of {group}, so every selected layer is alike."


def short(settings: MagnitudeSettings | None) -> str:
    """ "SparseGPT · 2:4 · 50%": method, pattern and sparsity only (:func:`describe` says everything)."""
    if settings is None:
        return "none (dense)"
    method = getattr(settings, "method", "magnitude")
    pattern = getattr(settings, "pattern", "unstructured")
    return f"{SHORT_LABELS.get(method, method)} · {pattern} · {settings.sparsity:.0%}"


def pattern_words(pattern: str) -> str:
    """A pattern's label inside a sentence: "whole MLP neurons", "2:4"."""
    label = PATTERN_LABELS[pattern].split(" (")[0]
    return label[0].lower() + label[1:]
