"""The one list of steps: what the planner, the CLI's single-step verbs, the stats and the report read.

A step is declared once, in its folder's `spec.py`, as a `Step`: its name (the verb, the run-directory folder, the
marker), its config section, whether it is row-local or needs a global view, what it adds and drops, and the
hooks the planner calls. Adding a step is one module plus one `register()` call (tests/test_registry.py registers
one from a test and runs it through the CLI, the stats and the report).

Two kinds (Spark's narrow and wide dependencies):

* `ROW`: a function of each row alone (`ops`: the step's row transforms). Consecutive row steps run fused in one
  Ray Data pass. A row step that reads no text (`needs_text = False`, e.g. a hash split) can also run over the
  compact rows between two global steps.
* `GLOBAL`: needs every row at once (the dedup graph, cross-split pairs, label folds). Its heavy part runs over
  compact rows (`digest`: columns a fused text pass computes for it, such as MinHash band keys) and `decide`s per
  row id; the next text pass applies those decisions row by row. A global step without `decide` (labels: it
  trains on the text) gets its text through `build`, the same function its single-step verb runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ray_jobs import schema
from ray_jobs.errors import UserError

ROW, GLOBAL = "row", "global"


@dataclass(frozen=True)
class Digest:
    """Columns a text pass computes for the global steps after it (e.g. MinHash band keys): `op(cfg)` appends them
    to the kept rows (null elsewhere); `columns(cfg)` names what the compact read takes. Steps that share a digest
    (dedup and leakage share the signatures) name it alike and it is computed once."""

    name: str
    op: Callable[[Any], Any]
    columns: Callable[[Any], tuple[str, ...]]


@dataclass(frozen=True)
class Step:
    name: str
    section: str  # its [section] of the config
    kind: str  # ROW or GLOBAL
    doc: str  # one line: what it does (the CLI help)
    partition: str = schema.STATUS  # its folder's partition column: status (kept / reasons) or split
    adds: tuple[str, ...] = ()  # columns it adds to the rows
    drops: tuple[str, ...] = ()  # statuses other than kept it gives, i.e. why it drops a row
    carries_text: bool = True  # its output rows still carry the text (tokenize and pack do not)
    needs_text: bool = True  # ROW: reads the text (False: can run over compact rows)
    enabled: Callable[[Any], bool] = lambda cfg: True  # in a whole run; asked for by name, a step always runs
    ops: Callable[[Any], list] | None = None  # ROW: cfg -> its row transforms (steps/base.Stage)
    digest: Digest | None = None  # GLOBAL: what the text pass before it computes for it
    # GLOBAL: (cfg, compact rows, read_input) -> (decided compact rows with status, side tables)
    decide: Callable[..., tuple[Any, dict]] | None = None
    # GLOBAL with decide: it also gets `text=(columns) -> the text pass's kept rows` (Parquet: only the columns
    # asked for), to read the text of the few rows it needs (dedup's exact check of candidate pairs)
    reads_text: bool = False
    key_columns: Callable[[Any], tuple[str, ...]] = lambda cfg: ()  # columns its compact rows need
    # GLOBAL: its single-step verb on full rows: (cfg, rows, read_input) -> (rows with status, side tables)
    build: Callable[..., tuple[Any, dict]] | None = None
    stats: Callable[[Any, dict], dict] | None = None  # (step folder, its counts) -> extra stats.json entries
    check: Callable[[Any], Any] | None = None  # report.checks.RunData -> a Check for the report's checklist
    config_cls: type | None = None  # a section RunConfig does not declare (steps registered from outside)
    after: str = ""  # registration: the step it follows

    def __post_init__(self) -> None:
        assert self.kind in (ROW, GLOBAL), self.kind
        assert (self.ops is not None) == (self.kind == ROW), f"{self.name}: ops iff a row step"


_STEPS: list[Step] = []


def register(step: Step, after: str | None = None) -> Step:
    """Add a step after `after` (default: at the end); a step of the same name is replaced in place."""
    _load_builtin()
    names = [s.name for s in _STEPS]
    if step.name in names:
        _STEPS[names.index(step.name)] = step
        return step
    where = after if after is not None else step.after
    if where and where not in names:
        raise UserError(f"register({step.name!r}, after={where!r}): no such step; steps: {', '.join(names)}")
    _STEPS.insert(names.index(where) + 1 if where else len(_STEPS), step)
    return step


def unregister(name: str) -> None:
    _STEPS[:] = [s for s in _STEPS if s.name != name]


@contextlib.contextmanager
def using(entries: list[Step]) -> Iterator[None]:
    """The registry is exactly `entries` for the duration: in a Ray worker, the driver's registry (steps registered
    there from outside the package included), which that process never saw."""
    _load_builtin()
    saved = list(_STEPS)
    _STEPS[:] = entries
    try:
        yield
    finally:
        _STEPS[:] = saved  # Ray reuses the process: the next task finds it as it was


def steps() -> list[Step]:
    _load_builtin()
    return list(_STEPS)


def names() -> tuple[str, ...]:
    return tuple(s.name for s in steps())


def get(name: str) -> Step:
    for s in steps():
        if s.name == name:
            return s
    raise UserError(f"no step named {name!r}; steps: {', '.join(names())}")


def section(cfg: Any, step: Step) -> Any:
    """The step's config section: a RunConfig field, or one built from `step.config_cls` (RunConfig.extra)."""
    return getattr(cfg, step.section) if hasattr(cfg, step.section) else cfg.extra[step.section]


_loaded = False


def _load_builtin() -> None:
    """The built-in steps in pipeline order, loaded on first use (their modules import numpy, numba, tokenizers)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from ray_jobs.steps.clean.spec import STEP as clean
    from ray_jobs.steps.decontam.spec import STEP as decontam
    from ray_jobs.steps.dedup.spec import LINES_STEP as dedup_lines
    from ray_jobs.steps.dedup.spec import STEP as dedup
    from ray_jobs.steps.labels.spec import STEP as labels
    from ray_jobs.steps.leakage.spec import STEP as leakage
    from ray_jobs.steps.pack.spec import STEP as pack
    from ray_jobs.steps.quality_model.spec import STEP as quality_model
    from ray_jobs.steps.split.spec import STEP as split
    from ray_jobs.steps.tokenize.spec import STEP as tokenize
    from ray_jobs.steps.url_filter.spec import STEP as url_filter

    _STEPS[:0] = [url_filter, clean, quality_model, dedup, split, leakage, dedup_lines, labels, decontam, tokenize,
                  pack]


def config_sections() -> dict[str, type]:
    """Sections of registered steps that RunConfig does not declare: the loader accepts them."""
    return {s.section: s.config_cls for s in steps() if s.config_cls is not None}

