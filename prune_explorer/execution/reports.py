"""What runs each layer of a session's model: one report per layer, and a summary for people."""

from __future__ import annotations

from dataclasses import dataclass, field

from prune_explorer.execution.labels import family


@dataclass
class LayerReport:
    """What runs one weight now.

    Attributes:
        name: module path; ``shape``: (out, in) as it runs (smaller after compaction);
        sparsity: share of zeros in the weight as it runs; ``backend``: dense, csr, compact, semi_2_4 or auto;
        kernel: label of what runs, per token count when auto chose differently by token count;
        choices: token count -> "dense" / "csr" (auto only); ``timings_ms``: token count -> backend -> median
        ms in the calibration; ``note``: why a layer stayed on masked dense, or what compaction did.
    """

    name: str
    shape: tuple[int, int]
    sparsity: float
    backend: str
    kernel: str
    choices: dict[int, str] = field(default_factory=dict)
    timings_ms: dict[int, dict[str, float]] = field(default_factory=dict)
    note: str = ""


@dataclass
class BackendReport:
    """What runs each layer; ``tokens``: token counts ``auto`` calibrated; ``layout``: activation layout."""

    backend: str
    layers: list[LayerReport]
    tokens: tuple[int, ...] = ()
    layout: str = ""

    def rows(self) -> list[dict]:
        """One flat dict per layer, for a table."""
        out = []
        for r in self.layers:
            row = {"layer": r.name, "shape": f"{r.shape[0]}×{r.shape[1]}", "sparsity": round(r.sparsity, 4)}
            row.update(backend=r.backend, kernel=r.kernel, note=r.note)
            for t in self.tokens:
                times = r.timings_ms.get(t, {})
                row[f"dense ms @{t}"] = times.get("dense")
                row[f"csr ms @{t}"] = times.get("csr")
            out.append(row)
        return out

    def kernels(self, by_family: bool = True) -> dict[str, int]:
        """How many layers run each kernel; ``by_family`` drops the sizes from compacted labels."""
        counts: dict[str, int] = {}
        for r in self.layers:
            label = family(r.kernel) if by_family else r.kernel
            counts[label] = counts.get(label, 0) + 1
        return counts

    def summary(self) -> str:
        """One line: how many layers run each kernel, most common first (and the activation layout)."""
        text = ", ".join(f"{n}× {k}" for k, n in sorted(self.kernels().items(), key=lambda kv: -kv[1]))
        return text + ("; token-fastest residual stream" if self.layout else "")
