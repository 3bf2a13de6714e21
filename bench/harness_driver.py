"""Run `lm_eval` in this process with two additions the speed comparison needs.

- The scoring phase is timed: every call of `HFLM.loglikelihood` (tokenization and the model's
  forward passes) adds to a total written as JSON to $NLI_BENCH_TIMING when the process exits.
- With $NLI_BENCH_SHOTS set (a JSON map: example uid -> shot uids), the few-shot sampler returns
  exactly those shots, so lm-eval sees the same prompts nli-eval builds and the answers can be
  compared one by one. Prompt text, delimiters and label words are lm-eval's own.

Run it with lm-eval's Python, with lm_eval's own arguments:

    /path/to/lm-eval-venv/bin/python bench/harness_driver.py run --model hf ...
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time

from lm_eval.api import samplers
from lm_eval.models.huggingface import HFLM

_timing = {"loglikelihood_seconds": 0.0, "requests": 0}
_loglikelihood = HFLM.loglikelihood


def _timed_loglikelihood(self, requests, *args, **kwargs):
    started = time.perf_counter()
    try:
        return _loglikelihood(self, requests, *args, **kwargs)
    finally:
        _timing["loglikelihood_seconds"] += time.perf_counter() - started
        _timing["requests"] += len(requests)


def _dump() -> None:
    path = os.environ.get("NLI_BENCH_TIMING")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(_timing, fh)


def _fixed_shots(table: dict[str, list[str]]):
    def sample(self, n, eval_doc=None, df=None, **kwargs):
        by_uid = {doc["uid"]: doc for doc in self.fewshot_docs()}
        return [by_uid[uid] for uid in table[eval_doc["uid"]][:n]]
    return sample


HFLM.loglikelihood = _timed_loglikelihood
if os.environ.get("NLI_BENCH_SHOTS"):
    with open(os.environ["NLI_BENCH_SHOTS"], encoding="utf-8") as fh:
        samplers.ContextSampler.sample = _fixed_shots(json.load(fh))
atexit.register(_dump)

if __name__ == "__main__":
    from lm_eval.__main__ import cli_evaluate

    sys.argv[0] = "lm_eval"
    sys.exit(cli_evaluate())
