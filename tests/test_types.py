"""The shared roots in ``linevision.types``: the one back-off rule."""

import doctest

import pytest

from linevision import types
from linevision.types import Backoff


def test_doctests():
    failures, _ = doctest.testmod(types)
    assert failures == 0


def test_backoff_doubles_from_min_up_to_the_cap():
    b = Backoff(0.05, 2.0)
    assert b.delay_s == 0.05
    waits = [b.failed() for _ in range(8)]
    assert waits == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert b.failures == 8
    assert b.delay_s == 2.0


def test_backoff_reset_starts_again_at_min():
    b = Backoff(0.5, 10.0)
    for _ in range(5):
        b.failed()
    b.reset()
    assert (b.failures, b.delay_s) == (0, 0.5)
    assert b.failed() == 0.5


def test_a_min_above_the_cap_is_waited_once_then_capped():
    # the camera config does not order reconnect_min_s and reconnect_max_s
    b = Backoff(5.0, 1.0)
    assert [b.failed() for _ in range(3)] == [5.0, 1.0, 1.0]


def test_backoff_stays_at_the_cap_however_long_the_link_is_down():
    # ``min_s * 2 ** (n - 1)`` raised OverflowError from the 1025th failure on
    b = Backoff(0.05, 2.0)
    waits = [b.failed() for _ in range(5000)]
    assert waits[-1] == 2.0
    assert max(waits) == 2.0
