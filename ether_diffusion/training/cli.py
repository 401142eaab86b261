"""Entry-point helper of the scripts: user errors (bad config, bad data, missing model or weights, unwritable
output) end the script with one line, ``error: <message>`` on stderr and exit status 2, not a traceback.

``--debug`` or ``ETHER_DEBUG=1`` shows the traceback instead (`ether_diffusion.user_errors`). Under
``accelerate launch`` the line comes from the script's process; the launcher then reports the non-zero exit itself
(``accelerate launch -q`` keeps that to the script's line for single-process runs).
"""

from __future__ import annotations

from typing import Callable

from ..user_errors import ModelNotAvailableError, debug_requested, exit_on_user_error


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that mean "the input is wrong", not "the code is wrong"."""
    from ..data.ade20k import ADE20KDataError
    from ..data.images import ImageDataError
    from ..export import ExportError
    from ..io import AdapterMismatchError
    from ..typed_config import ConfigError
    from .checkpoint import CheckpointError

    return (ConfigError, ModelNotAvailableError, CheckpointError, AdapterMismatchError, ImageDataError,
            ADE20KDataError, ExportError, FileNotFoundError, NotADirectoryError, PermissionError)


def run_cli(main: Callable[[], object], extra_errors: tuple[type[BaseException], ...] = ()) -> None:
    """Call ``main()``; a user error prints ``error: <message>`` to stderr and exits with status 2."""
    exit_on_user_error(main, lambda: (*user_errors(), *extra_errors), debug=debug_requested())
