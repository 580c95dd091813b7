"""The one exception type users see for bad input or configuration.

Adapters (pipeline, CLI, TorchServe handler) catch :class:`QAError` and turn it into a message or a
per-request error; anything else escaping is a bug.
"""

from __future__ import annotations


class QAError(ValueError):
    """Bad input, data or configuration, with a message saying what to do about it."""
