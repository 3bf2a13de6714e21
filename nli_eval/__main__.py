"""`python -m nli_eval` (and `accelerate launch -m nli_eval run ...`)."""

from .cli import entry

if __name__ == "__main__":
    entry()
