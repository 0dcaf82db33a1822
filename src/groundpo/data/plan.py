"""What a stage needs from the data pipeline, and the context in which upstream's loader obeys it."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from ..views import TokenView
from .rows import RowCheck

_active: "DataPlan | None" = None


@dataclass(frozen=True)
class DataPlan:
    stage: str
    token_views: tuple[TokenView, ...] = ()
    row_checks: tuple[RowCheck, ...] = ()
    input_contrastive: Callable[[dict], bool] | None = None  # see groundpo.views.StagePlan
    # prompt rows with a verifiable answer (MBPO's online data), loaded with upstream's stage "ppo":
    # groundpo.data.prompts.PromptDatasetProcessor encodes them and PROMPT_CHECKS replace the pair checks
    prompts: bool = False


@contextmanager
def preference_data(plan: DataPlan) -> Iterator[DataPlan]:
    """Within this block, ``llamafactory.data.get_dataset(stage="rm")`` builds multi-view rows for ``plan``
    (``stage="ppo"``: prompt rows, when ``plan.prompts``)."""
    global _active
    previous, _active = _active, plan
    try:
        yield plan
    finally:
        _active = previous


def active_plan() -> DataPlan | None:
    return _active
