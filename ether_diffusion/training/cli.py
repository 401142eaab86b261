"""Entry-point helper: user errors (bad config, bad data, missing model) end the script with one line, not a trace."""

from __future__ import annotations

import sys
from typing import Callable

from ..typed_config import ConfigError
from ..io import AdapterMismatchError
from ..models.loading import ModelNotAvailableError
from .checkpoint import CheckpointError

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ModelNotAvailableError, CheckpointError,
                                                 AdapterMismatchError, FileNotFoundError)


def run_cli(main: Callable[[], object], extra_errors: tuple[type[BaseException], ...] = ()) -> None:
    """Call ``main()``; a user error prints ``error: <message>`` to stderr and exits with status 2."""
    from ..data.images import ImageDataError

    try:
        main()
    except (*USER_ERRORS, ImageDataError, *extra_errors) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
