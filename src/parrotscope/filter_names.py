"""The filters of :mod:`parrotscope.filters` and the names of the training subsets they write.

Apart from the filters' code (images, models), so that the tables (:mod:`parrotscope.tables`)
can name a subset's filter without importing it: a table rule's environment has no torch.
"""

from __future__ import annotations

PREFIX = "filter_"
FIX = "fix"
BASELINES = ("clip_score", "tmars", "flip_clip", "random")
METHODS = (FIX, *BASELINES)


class FilterError(ValueError):
    """A filter input or setting is wrong; the message names it."""


def subset_name(method: str) -> str:
    """The training subset a filter writes: ``filter_<method>``."""
    if method not in METHODS:
        raise FilterError(f"unknown filter {method!r}; filters: {list(METHODS)}")
    return PREFIX + method


def method_of(subset: str) -> str:
    """The filter that wrote a subset: ``filter_<method>`` -> ``method``."""
    return subset.removeprefix(PREFIX)
