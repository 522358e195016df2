"""The one base level for stages.

A stage is a frozen config plus `__call__(pa.Table) -> pa.Table`. A stage that needs heavy state (a tokenizer,
a language model) loads it in `setup()`; the engine then runs it in an actor pool so the state loads once per
actor instead of once per batch. Stages never import Ray and never touch files, so tests call them directly.
"""

from __future__ import annotations

import pyarrow as pa


class Stage:
    """Stateless by default. Subclasses set `stateful = True` and implement `setup()` for heavy state."""

    stateful: bool = False

    def setup(self) -> None:
        """Load heavy state; called once per actor (or once, lazily, when the stage is used without Ray)."""

    def __call__(self, table: pa.Table) -> pa.Table:
        raise NotImplementedError
