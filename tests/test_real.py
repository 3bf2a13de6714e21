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


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b"])
def test_real_models_score_packed_prompts_as_padded_batches(name):
    """On real checkpoints (Llama-, Gemma-3- and Qwen2-shaped) the probe lets prompts pack, and packed
    passes give the padded batches' answers and scores."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nli_eval.backends.causal import CausalLMBackend
    from nli_eval.prompts import PromptBuilder
    from nli_eval.templates import BUILTIN_TEMPLATES

    data = real_data()
    path = real_model(name)
    task = builtin_catalog().get("anli_r1")
    examples = load_split(task, "dev", data).examples[:24]
    builder = PromptBuilder(BUILTIN_TEMPLATES["harness"], task.label_space)
    prompts = [builder.render(e, ()) for e in examples]
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    tok = AutoTokenizer.from_pretrained(path)
    packed = CausalLMBackend(model, tok, name=name, batch_size=8)
    assert packed.info.extra.get("packed_prompts") == "true"
    got = packed.score(prompts)
    want = CausalLMBackend(model, tok, name=name, batch_size=8, pack_prompts=False).score(prompts)
    for g, w in zip(got, want):
        assert max(g, key=g.get) == max(w, key=w.get)
        assert all(abs(g[label] - w[label]) < 1e-3 for label in w)
