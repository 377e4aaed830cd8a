"""How long work reports how far it got: a callback given the share done, in (0, 1]."""

from __future__ import annotations

from collections.abc import Callable

# Called with the share of the work done, in (0, 1]; None: nobody is listening.
Progress = Callable[[float], None] | None
# Called with the share done and the stage reached ("reading the GGUF header"), for loaders.
StagedProgress = Callable[[float, str], None] | None
