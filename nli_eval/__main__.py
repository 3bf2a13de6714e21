"""`python -m nli_eval` (and `accelerate launch -m nli_eval run ...`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
