"""The native forward (backends/native.py) scores as transformers does, and gives way where it must."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from nli_eval.backends.causal import CausalLMBackend
from nli_eval.backends.loader import BackendOptions, load_backend
from nli_eval.backends.native import NativeTokenizer, NotNative, load_native, native_spec
from nli_eval.labels import LabelSpace
from nli_eval.modeling import LoadOptions, resolve
from nli_eval.prompts import PromptBuilder, ShotSampler
from nli_eval.templates import BUILTIN_TEMPLATES

from conftest import real_data, real_model
from helpers import build_causal, corpus
from test_fastpaths import MULTI, SINGLE, examples, prompts_and_reference

SHAPES = ["tiny_llama", "tiny_qwen2"]


def spec_of(path, **load):
    return native_spec(resolve(str(path)), LoadOptions(**load), "auto", None, "cpu")


def copy_checkpoint(src: Path, dst: Path, **config_changes) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(config_changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("shape", SHAPES)
def test_logits_match_transformers(shape, request):
    """Padded rows and a packed row (two prompts, the second continuing from a shared start) give
    transformers' logits, with and without the packed CPU kernels."""
    import torch
    from transformers import AutoModelForCausalLM

    from nli_eval.backends.cpu_linear import pack_linear_layers
    from nli_eval.backends.packing import packed

    path = request.getfixturevalue(shape)
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(3, reference.config.vocab_size, (3, 11), generator=generator)
    with torch.inference_mode():
        want = reference(input_ids=rows, use_cache=False).logits
    for kernels in (False, True):
        model, _ = load_native(spec_of(path))
        if kernels:
            assert pack_linear_layers(model) > 0
        with torch.inference_mode():
            got = model(input_ids=rows).logits
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
            ids = torch.cat([rows[0], rows[1], rows[1, 6:]]).unsqueeze(0)
            positions = torch.cat([torch.arange(11), torch.arange(11), torch.arange(6, 11)]).unsqueeze(0)
            with packed(model, [(0, 11, 0, 0), (11, 22, 0, 0), (22, 27, 11, 17)]):
                together = model(input_ids=ids, position_ids=positions).logits[0]
        assert torch.allclose(together[10], want[0, 10], atol=1e-4, rtol=1e-4)
        assert torch.allclose(together[21], want[1, 10], atol=1e-4, rtol=1e-4)
        assert torch.allclose(together[26], want[1, 10], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
def test_the_workspace_forward_gives_the_module_forwards_bits(shape, request, monkeypatch):
    """With the BLAS kernels (chunked MLPs) every wide activation goes to buffers kept from pass to pass:
    the logits are the module-by-module forward's bit for bit, on padded rows and on a packed row, for
    passes smaller and larger than the buffers (at kept positions to rounding: the last layer attends
    from those alone); a hook on an MLP turns the buffers off."""
    import torch

    from nli_eval.backends.cpu_linear import chunk_gated_mlps
    from nli_eval.backends.packing import packed

    path = request.getfixturevalue(shape)
    model, _ = load_native(spec_of(path))
    assert chunk_gated_mlps(model) == len(model.model.layers)
    assert model._on_workspace()
    monkeypatch.setattr(type(model.model.layers[0].mlp), "chunk", 7)  # several chunks, and a tail
    vocab = model.lm_head.out_features
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(3, vocab, (3, 11), generator=generator)
    ids = torch.cat([rows[0], rows[1], rows[1, 6:]]).unsqueeze(0)
    positions = torch.cat([torch.arange(11), torch.arange(11), torch.arange(6, 11)]).unsqueeze(0)
    segments = [(0, 11, 0, 0), (11, 22, 0, 0), (22, 27, 11, 17)]
    keep_rows, keep_packed = torch.tensor([[10, 3], [10, 0], [7, 7]]), torch.tensor([[10, 21, 26, 26]])

    def passes():
        out = []
        with torch.inference_mode():
            out.append(model(input_ids=rows).logits.clone())
            out.append(model(input_ids=rows, keep=keep_rows).logits.clone())
            with packed(model, segments):
                out.append(model(input_ids=ids, position_ids=positions).logits.clone())
                out.append(model(input_ids=ids, position_ids=positions, keep=keep_packed).logits.clone())
            out.append(model(input_ids=rows[:1, :4]).logits.clone())  # within the buffers
            out.append(model(input_ids=torch.cat([rows, rows], dim=1)).logits.clone())  # past them
        return out

    got = passes()
    held = model.workspace.nbytes()
    assert held > 0
    assert all(torch.equal(a, b) for a, b in zip(passes(), got))  # the same buffers again, the same bits
    assert model.workspace.nbytes() == held
    with monkeypatch.context() as patch:
        patch.setattr(type(model), "_on_workspace", lambda self: False)
        want = passes()
    assert all(torch.equal(got[i], want[i]) for i in (0, 2, 4, 5))
    assert all(torch.allclose(got[i], want[i], atol=1e-5, rtol=1e-5) for i in (1, 3))
    # Kept positions run their last MLP and projection on fewer rows: the BLAS may sum in another order.
    assert torch.allclose(got[1], want[0][torch.arange(3).unsqueeze(1), keep_rows], atol=1e-5, rtol=1e-5)
    assert torch.allclose(got[3][0], want[2][0, keep_packed[0]], atol=1e-5, rtol=1e-5)
    handle = model.model.layers[0].mlp.register_forward_hook(lambda *args: None)
    assert not model._on_workspace()
    handle.remove()
    assert model._on_workspace()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("template", [SINGLE, BUILTIN_TEMPLATES["harness"], MULTI],
                         ids=["single-token", "mixed", "multi-token"])
@pytest.mark.parametrize("sampling", ["per-example", "fixed"])
def test_native_backend_scores_as_naive(template, sampling, shape, request):
    """Every label word scores as the plain transformers model scores its whole sequence, at several
    batch sizes. Label words of several tokens and a shared few-shot prefix need a key/value cache,
    so there the backend loads the model through transformers and says so in its details."""
    from transformers import AutoModelForCausalLM

    path = request.getfixturevalue(shape)
    prompts, reference, _, _ = prompts_and_reference(path, template, sampling)
    for bs in (1, 3, 16):
        for pack in (False, True):
            loaded = []

            def through_transformers():
                loaded.append(1)
                return AutoModelForCausalLM.from_pretrained(path).eval()

            model, native_tok = load_native(spec_of(path))
            backend = CausalLMBackend(model, native_tok, name="t", batch_size=bs, pack_prompts=pack,
                                      transformers_model=through_transformers)
            assert backend.info.extra["forward"] == "native"
            scores = backend.score(prompts)
            for got, want in zip(scores, reference):
                for label in want:
                    assert got[label] == pytest.approx(want[label], abs=2e-4)
            if template is SINGLE and sampling == "per-example":
                assert not loaded and backend.info.extra["forward"] == "native"
            else:  # label words of several tokens, or a shared prefix
                assert loaded and backend.info.extra["forward"] == "transformers"


def test_a_native_model_without_a_fallback_says_what_it_lacks(tiny_llama):
    from nli_eval.errors import ModelError

    exs = examples(6)
    sampler = ShotSampler(exs, "t", 1, "fixed", same_split=True)
    builder = PromptBuilder(MULTI, LabelSpace.THREE_WAY)
    model, tok = load_native(spec_of(tiny_llama))
    backend = CausalLMBackend(model, tok, name="t", batch_size=4)
    with pytest.raises(ModelError, match="key/value cache"):
        backend.score([builder.render(e, sampler.draw(e, 2)) for e in exs])


TEXTS = corpus(60, seed=5) + [
    "  leading and trailing spaces  ", "tabs\tand\nnew\r\nlines", "Ünïcödé, naïve café — “quotes” …",
    "日本語のテキスト, 中文, 한국어", "emoji 🤖🚀 and zero-width\u200bjoin", "numbers 1234567 3.14159 -2e10",
    "", " ", "a" * 300, "Question: True, False, or Neither?\nAnswer: Neither", "<s> </s> <unk> literal specials",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_tokenizer_matches_transformers(shape, request):
    from transformers import AutoTokenizer

    path = request.getfixturevalue(shape)
    want = AutoTokenizer.from_pretrained(path)
    got = NativeTokenizer(spec_of(path))
    assert got(TEXTS, add_special_tokens=False)["input_ids"] == want(TEXTS, add_special_tokens=False)["input_ids"]
    assert got.bos_token_id == want.bos_token_id


def test_only_plain_llama_and_qwen2_checkpoints_in_float32_on_a_cpu_run_natively(tiny_llama, tiny_gemma,
                                                                                tiny_gpt2, tmp_path):
    ref = resolve(str(tiny_llama))
    assert spec_of(tiny_llama) is not None
    assert spec_of(tiny_llama, dtype="float32") is not None
    assert spec_of(tiny_llama, dtype="bfloat16") is None
    assert spec_of(tiny_llama, trust_remote_code=True) is None
    assert native_spec(ref, LoadOptions(), "auto", None, "cuda") is None
    assert native_spec(ref, LoadOptions(), "classifier", None, "cpu") is None
    assert native_spec(ref, LoadOptions(), "auto", True, "cpu") is None  # BOS asked for
    assert spec_of(tiny_gemma) is None and spec_of(tiny_gpt2) is None
    scaled = copy_checkpoint(tiny_llama, tmp_path / "scaled",
                             rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    assert spec_of(scaled) is None
    biased = copy_checkpoint(tiny_llama, tmp_path / "biased", attention_bias=True)
    assert spec_of(biased) is None
    other_tok = copy_checkpoint(tiny_llama, tmp_path / "other-tokenizer")
    config = json.loads((other_tok / "tokenizer_config.json").read_text())
    (other_tok / "tokenizer_config.json").write_text(json.dumps(dict(config, tokenizer_class="LlamaTokenizer")))
    assert spec_of(other_tok) is None
    assert not load_backend(ref, LoadOptions(device="cpu"), BackendOptions(native=False), "cpu")[0].model.__class__.__name__.startswith("Native")


def test_weights_that_do_not_match_the_config_load_through_transformers(tiny_llama, tmp_path):
    """A config that declares more layers than the weights hold: transformers reports it its own way,
    and the native loader gives way rather than guess."""
    wrong = copy_checkpoint(tiny_llama, tmp_path / "wrong", intermediate_size=48)
    with pytest.raises(NotNative, match="shape"):
        load_native(spec_of(wrong))
    extra = copy_checkpoint(tiny_llama, tmp_path / "extra")
    from safetensors.torch import load_file, save_file
    weights = load_file(extra / "model.safetensors")
    weights["model.layers.0.self_attn.rotary.scale"] = weights["model.norm.weight"].clone()
    save_file(weights, extra / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NotNative, match="not in the llama layout"):
        load_native(spec_of(extra))


def test_a_token_declared_only_in_tokenizer_config_keeps_the_transformers_tokenizer(tiny_llama, tmp_path):
    """transformers adds a special token that tokenizer_config.json declares and tokenizer.json lacks,
    and then splits text around it; `tokenizers` alone would not, so that checkpoint is not native."""
    declared = copy_checkpoint(tiny_llama, tmp_path / "declared")
    config = json.loads((declared / "tokenizer_config.json").read_text())
    config["extra_special_tokens"] = ["<|marker|>"]
    (declared / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(NotNative, match="marker"):
        NativeTokenizer(spec_of(declared))


def test_a_mismatched_checkpoint_falls_back_in_load_backend(tiny_llama, tmp_path):
    extra = copy_checkpoint(tiny_llama, tmp_path / "extra")
    from safetensors.torch import load_file, save_file
    weights = load_file(extra / "model.safetensors")
    weights["unused.extra"] = weights["model.norm.weight"].clone()
    save_file(weights, extra / "model.safetensors", metadata={"format": "pt"})
    ref, load = resolve(str(extra)), LoadOptions(device="cpu")
    options = BackendOptions(batch_size=4)
    backend, _ = load_backend(ref, load, options, "cpu", config=native_spec(ref, load, "auto", None, "cpu"),
                              kind="causal")
    assert backend.info.extra["forward"] == "transformers"


def run_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "nli_eval", "run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def llama_with_one_token_labels(tmp_path_factory) -> Path:
    """A tiny Llama whose tokenizer has " True", " False" and " Neither" as tokens, as real ones do."""
    return build_causal(tmp_path_factory.mktemp("llama-one-token-labels"), "llama",
                        added=(" True", " False", " Neither"))


def test_a_native_run_never_imports_transformers_and_matches_one_through_it(llama_with_one_token_labels,
                                                                             anli_hub, tmp_path):
    """The command line on a Llama checkpoint with one-token label words: no transformers in the
    process, the details say `forward: native`, and every prediction and score is that of
    --via-transformers."""
    common = [str(llama_with_one_token_labels), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub), "--device",
              "cpu", "--no-progress", "--no-report", "--batch-size", "4"]
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nfrom nli_eval.cli import main\ncode = main(sys.argv[1:])\n"
                     "print('TRANSFORMERS', 'transformers' in sys.modules, file=sys.stderr)\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, str(probe), "run", *common, "--output-dir", str(tmp_path / "a")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "TRANSFORMERS False" in done.stderr
    other = run_cli(common + ["--output-dir", str(tmp_path / "b"), "--via-transformers"], tmp_path)
    assert other.returncode == 0, other.stderr
    a, b = (json.loads((tmp_path / d / "results.json").read_text())["models"][0] for d in "ab")
    assert a["backend_details"]["forward"] == "native" and b["backend_details"]["forward"] == "transformers"
    samples = []
    for d in "ab":
        lines = [json.loads(line) for f in sorted((tmp_path / d / "samples").rglob("*.jsonl")) for line in f.open()]
        samples.append(lines)
    assert samples[0] and len(samples[0]) == len(samples[1])
    for x, y in zip(*samples):
        assert x["id"] == y["id"] and x["predicted"] == y["predicted"]
        assert x["scores"] == pytest.approx(y["scores"], abs=1e-4)


def test_the_runner_records_the_forward_that_ended_the_run(tiny_llama, anli_hub, tmp_path):
    """A fixed few-shot prefix needs a key/value cache: the native forward gives way, the run goes on
    through transformers, and the record says so."""
    from nli_eval.runner import RunConfig, Runner

    cfg = RunConfig(models=(str(tiny_llama),), tasks=("anli_r1",), split="dev", data_dir=str(anli_hub),
                    shots=(0, 2), sampling="fixed", output_dir=str(tmp_path), progress=False,
                    load=LoadOptions(device="cpu"), backend=BackendOptions(batch_size=4))
    record = Runner(cfg).run()
    assert record.models[0].backend_details["forward"] == "transformers"
    again = Runner(replace(cfg, backend=BackendOptions(batch_size=4, native=False),
                           output_dir=str(tmp_path / "again"))).run()
    for r, s in zip(record.models[0].results, again.models[0].results):
        assert r.accuracy == s.accuracy


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b"])
def test_real_checkpoints_score_natively_as_through_transformers(name):
    """SmolLM2 (Llama) and Qwen2.5 read natively: the same token ids for ANLI prompts and the same
    answers and scores as the same checkpoint loaded by transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nli_eval.data import load_split
    from nli_eval.taskspec import builtin_catalog

    data, path = real_data(), real_model(name)
    task = builtin_catalog().get("anli_r1")
    exs = load_split(task, "dev", data).examples[:24]
    builder = PromptBuilder(BUILTIN_TEMPLATES["harness"], task.label_space)
    prompts = [builder.render(e, ()) for e in exs]
    spec = spec_of(path)
    assert spec is not None
    model, tok = load_native(spec)
    texts = [p.context for p in prompts] + TEXTS
    assert tok(texts, add_special_tokens=False)["input_ids"] == \
        AutoTokenizer.from_pretrained(path)(texts, add_special_tokens=False)["input_ids"]
    got = CausalLMBackend(model, tok, name=name, batch_size=8).score(prompts)
    reference = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    want = CausalLMBackend(reference, AutoTokenizer.from_pretrained(path), name=name, batch_size=8).score(prompts)
    for g, w in zip(got, want):
        assert max(g, key=g.get) == max(w, key=w.get)
        assert all(abs(g[label] - w[label]) < 1e-3 for label in w)


@pytest.mark.real
def test_gemma_is_not_read_natively():
    assert spec_of(real_model("gemma-3-270m")) is None
