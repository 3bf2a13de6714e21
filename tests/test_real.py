"""Real tier: ANLI dev from ../shared/data and a real checkpoint, skipped when either is absent."""

from __future__ import annotations

import pytest

from conftest import REAL_DATA, real_data, real_model

from nli_eval.data import load_split
from nli_eval.labels import Label
from nli_eval.taskspec import builtin_catalog

pytestmark = pytest.mark.real


def test_both_anli_layouts_give_the_same_rows(tmp_path):
    data = real_data()
    task = builtin_catalog().get("anli_r3")
    hub = load_split(task, "dev", data)
    release_root = tmp_path / "release"
    release_root.mkdir()
    (release_root / "anli-v1.0").symlink_to(REAL_DATA / "anli-v1.0")
    release = load_split(task, "dev", release_root)
    assert len(hub.examples) == len(release.examples) == 1200
    assert [(e.id, e.label) for e in hub.examples] == [(e.id, e.label) for e in release.examples]
    assert {e.label for e in hub.examples} == {Label.ENTAILMENT, Label.NEUTRAL, Label.CONTRADICTION}


@pytest.mark.slow
def test_real_model_zero_and_few_shot(tmp_path):
    from nli_eval.backends.loader import BackendOptions
    from nli_eval.runner import RunConfig, Runner

    data = real_data()
    model = real_model("smollm2-135m")
    cfg = RunConfig(models=(str(model),), tasks=("anli_r1",), split="dev", data_dir=str(data), limit=24,
                    shots=(0, 2), sampling="fixed", output_dir=str(tmp_path), progress=False,
                    backend=BackendOptions(batch_size=8))
    record = Runner(cfg).run()
    m = record.models[0]
    assert m.params_total and 100e6 < m.params_total < 200e6
    assert [r.n for r in m.results] == [24, 24]
    assert all(0.0 <= r.accuracy <= 1.0 and r.truncated == 0 for r in m.results)
