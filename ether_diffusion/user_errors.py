"""One line for a user's mistake: ``error: <message>`` on stderr, exit status 2, no traceback.

Shared by the training scripts (`ether_diffusion.training.cli.run_cli`) and the eval CLI; light (no torch). The one
`ModelNotAvailableError` lives here for both: the base model a script loads, the scoring models of the eval.
``--debug`` on the command line (taken out before the command parses its flags) or ``ETHER_DEBUG=1`` in the
environment re-raises instead, with the full traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, TypeVar

DEBUG_FLAG = "--debug"
DEBUG_ENV = "ETHER_DEBUG"
EXIT_USER_ERROR = 2
T = TypeVar("T")


class ModelNotAvailableError(OSError):
    """A model or weights file that cannot be loaded here (not cached offline, no such folder, no download): the
    base Stable Diffusion pipeline, or a scoring model of the eval (DINO, CLIP, LPIPS backbone, segmenter, Inception).

    The message names the model and how to provide it, e.g. "DINO model 'facebook/dino-vits16' is not available
    offline; download it on a machine with internet (hf download facebook/dino-vits16 --local-dir dino-vits16) and
    pass --dino /path/to/it".
    """


def debug_requested(argv: list[str] | None = None) -> bool:
    """True with ``--debug`` in ``argv`` (default ``sys.argv``, from which it is removed) or ``ETHER_DEBUG=1``."""
    argv = sys.argv if argv is None else argv
    flag = DEBUG_FLAG in argv
    while DEBUG_FLAG in argv:
        argv.remove(DEBUG_FLAG)
    return flag or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on")


def one_line(error: BaseException, prefix: str = "error: ") -> str:
    """``error: <message>`` on one line (a message of several lines keeps its first)."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.strerror}: {str(error.filename)!r}"
    return prefix + (text.splitlines() or [""])[0]


def exit_on_user_error(main: Callable[[], T], errors: Callable[[], tuple[type[BaseException], ...]],
                       debug: bool = False, prefix: str = "error: ") -> T:
    """``main()``; an exception of one of ``errors()`` (imported only when one is raised) becomes one line on
    stderr and ``SystemExit(2)``, unless ``debug``."""
    try:
        return main()
    except Exception as e:
        if debug or not isinstance(e, errors()):
            raise
        print(one_line(e, prefix), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
