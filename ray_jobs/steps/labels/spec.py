"""The labels step: suspected label errors by confident learning on out-of-fold probabilities (barrier.py)."""

from __future__ import annotations

from ray_jobs.steps.labels import barrier
from ray_jobs.steps.registry import GLOBAL, Step

# GLOBAL without `decide`: its folds train on the text, so a plan gives it full rows (its `build`), which it
# reads twice (features, then marking) like the single-step verb does.
STEP = Step(
    name="labels", section="labels", kind=GLOBAL,
    doc="suspected label errors (out-of-fold probabilities + confident learning), ranked",
    adds=(barrier.PROBS, barrier.PRED, barrier.P_GIVEN, barrier.QUALITY, barrier.ISSUE, barrier.RANK),
    drops=(barrier.LABEL_ISSUE, barrier.MISSING_LABEL), enabled=lambda cfg: cfg.labels.enabled,
    build=barrier.build,
)
