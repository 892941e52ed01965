"""The pure parts' examples (schedule, sample labels, the page's lifecycle view, the film
tiles kept for a dataset) hold."""

from __future__ import annotations

import doctest

import pytest

from linevision import paths
from linevision.bridges import plc_link
from linevision.hmi import lifecycle as hmi_lifecycle
from linevision.inference.film import segment
from linevision.lifecycle import (
    dataset,
    repeatability,
    review,
    samples,
    schedule,
    shadow_report,
    stats,
)


@pytest.mark.parametrize(
    "module",
    [
        schedule,
        samples,
        stats,
        shadow_report,
        repeatability,
        review,
        dataset,
        paths,
        hmi_lifecycle,
        plc_link,
        segment,
    ],
)
def test_doctests(module: object) -> None:
    failures, tried = doctest.testmod(module)  # type: ignore[arg-type]
    assert tried > 0
    assert failures == 0
