"""What every metric returns and how an unavailable one says why.

A metric is a callable `(sample, video) -> MetricResult` with a `name`, the table `columns` it fills and the
`backend` that produced its numbers. It raises (any exception, with a message naming the problem) when a sample
cannot be scored; the runner records that message for the sample and carries on.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from fc_jax.eval.bench import Sample
from fc_jax.video import Video


@dataclasses.dataclass
class MetricResult:
    values: dict[str, float]  # column -> value, e.g. {"amp": 0.77}
    per_frame: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # curves for the plot
    info: dict = dataclasses.field(default_factory=dict)  # e.g. frames with a face, the judge's raw answer


class Metric(Protocol):
    name: str
    columns: tuple[str, ...]
    backend: str

    def __call__(self, sample: Sample, video: Video) -> MetricResult: ...


@dataclasses.dataclass(frozen=True)
class Unavailable:
    """A metric that cannot run here (missing weights, package or server): reported as not computed."""

    name: str
    columns: tuple[str, ...]
    reason: str
