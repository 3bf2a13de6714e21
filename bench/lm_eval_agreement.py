"""Do nli-eval and lm-evaluation-harness predict the same labels on ANLI?

Both tools read the same local file (the first --n rows of ANLI dev R1, Hub layout), score the
same model zero-shot with the same prompt and label words, and this prints the per-example
agreement and both accuracies.

    python bench/lm_eval_agreement.py --model ~/.cache/nli-eval/models/smollm2-135m \
        --anli ../shared/data/anli/dev_r1.jsonl --lm-eval /path/to/venv/bin/lm_eval
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import common_arguments, harness_python, run_harness, run_nli_eval, slice_anli  # noqa: E402


def main() -> int:
    ap = common_arguments(__doc__.splitlines()[0], None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_file = slice_anli(args.anli, args.n, work)
        harness = run_harness(harness_python(args.lm_eval), args.model, data_file, work, 0, args.batch_size, "0")
        nli = run_nli_eval(args.python, args.model, work / "data", work, 0, args.batch_size, "0")
    h_run, h_pred, h_acc = harness.process, harness.predictions, harness.accuracy
    n_run, n_pred, n_acc = nli.process, nli.predictions, nli.accuracy
    if len(h_pred) != len(n_pred):
        raise SystemExit(f"different example counts: lm-eval {len(h_pred)}, nli-eval {len(n_pred)}")
    same = sum(a == b for a, b in zip(h_pred, n_pred))
    agreement = same / len(h_pred)
    print(f"model: {args.model}")
    print(f"examples: {len(h_pred)} (ANLI dev R1, zero-shot, harness prompt)")
    print(f"lm-evaluation-harness accuracy: {100 * h_acc:.2f}%  ({h_run.wall:.1f}s)")
    print(f"nli-eval accuracy:              {100 * n_acc:.2f}%  ({n_run.wall:.1f}s)")
    print(f"per-example agreement: {same}/{len(h_pred)} = {100 * agreement:.2f}%")
    print(f"accuracy difference: {100 * abs(h_acc - n_acc):.2f} points")
    ok = agreement >= 0.99 and abs(h_acc - n_acc) <= 0.005
    print("PASS" if ok else "FAIL", "(needs >= 99% agreement and <= 0.5 points)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
