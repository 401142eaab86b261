"""`python -m eval ...` (and `accelerate launch -m eval ...`)."""

import sys

from eval.cli import main

sys.exit(main())
