"""The model's lifecycle on the line PC: challenge, drift, shadow, promote, review.

Runs inside the daemon's process beside the pipeline, never on its hot path: master samples
go through the live stations marked as challenge cells (``Frame.challenge``), a drift monitor
and a shadow model read what the stations saw after their verdicts left. The daemon builds
these parts (``daemon/lifecycle.py``) and hands them a :class:`~linevision.lifecycle.host.Host`;
they import nothing of the daemon. docs/lifecycle.md describes the loop.
"""
