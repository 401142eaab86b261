"""The two errors a user of `eval` can meet, each raised with one line that says what to do.

`ModelNotAvailableError` is the package's one class (`ether_diffusion.user_errors`, light), shared with the scripts.
"""

from __future__ import annotations

from ether_diffusion.user_errors import ModelNotAvailableError

__all__ = ["EvalInputError", "ModelNotAvailableError"]


class EvalInputError(ValueError):
    """A manifest, folder or option that cannot be scored as given (bad row, missing file, wrong layout)."""
