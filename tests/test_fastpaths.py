"""The fast scoring paths give the same scores as running every label word as a full sequence."""

from __future__ import annotations

import pytest

from nli_eval.backends.causal import CausalLMBackend
from nli_eval.labels import Label, LabelSpace
from nli_eval.prompts import PromptBuilder, ShotSampler
from nli_eval.templates import BUILTIN_TEMPLATES, Template
from nli_eval.types import NLIExample

from helpers import nli_rows

MULTI = Template("multi", BUILTIN_TEMPLATES["harness"].query,
                 {Label.ENTAILMENT: "always True", Label.NEUTRAL: "Maybe Neither", Label.CONTRADICTION: "never False"})
# Label words of one token each in the test tokenizer (where " Neither" and " False" take several).
SINGLE = Template("single", BUILTIN_TEMPLATES["harness"].query,
                  {Label.ENTAILMENT: "True", Label.NEUTRAL: "Yes", Label.CONTRADICTION: "no"})


def examples(n=14):
    return tuple(NLIExample(r["uid"], r["premise"], r["hypothesis"], (Label.ENTAILMENT, Label.NEUTRAL,
                 Label.CONTRADICTION)[r["label"]]) for r in nli_rows(n, seed=3))


def naive(model, backend, prompt):
    import torch
    enc = backend.encode([prompt])[0]
    out = {}
    for label, cont in enc.options.items():
        seq = torch.tensor([list(enc.context) + list(cont)])
        with torch.no_grad():
            logp = torch.log_softmax(model(seq).logits[0].float(), -1)
        n = len(enc.context)
        out[label] = sum(float(logp[n - 1 + j, cont[j]]) for j in range(len(cont)))
    return out


def prompts_and_reference(path, template, sampling):
    """The prompts of `examples()` (two shots each) and each one's naive scores from the plain model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    exs = examples()
    sampler = ShotSampler(exs, "t", 1, sampling, same_split=True)
    builder = PromptBuilder(template, LabelSpace.THREE_WAY)
    prompts = [builder.render(e, sampler.draw(e, 2)) for e in exs]
    plain = AutoModelForCausalLM.from_pretrained(path).eval()
    reference = [naive(plain, CausalLMBackend(plain, tok, name="t", cpu_kernels=False), p) for p in prompts]
    return prompts, reference, plain, tok


@pytest.mark.parametrize("shape", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("template", [SINGLE, BUILTIN_TEMPLATES["harness"], MULTI],
                         ids=["single-token", "mixed", "multi-token"])
@pytest.mark.parametrize("sampling", ["per-example", "fixed"])
def test_fast_paths_equal_naive(template, sampling, shape, request, monkeypatch):
    """Every path (CPU layers plain, packed for oneDNN or chunked on the BLAS, prompts packed end to end
    or padded, cached prefix or not, several batch sizes) scores as the plain model does on each label
    word's whole sequence. The Gemma-shaped model has a 16-token sliding window, shorter than every
    prompt."""
    from transformers import AutoModelForCausalLM

    from nli_eval.backends import cpu_linear

    path = request.getfixturevalue(shape)
    prompts, reference, plain, tok = prompts_and_reference(path, template, sampling)
    details = {"plain": None, "oneDNN": "packed_linear_layers", "BLAS": "chunked_gated_mlps"}
    for kernels, detail in details.items():
        if kernels == "oneDNN" and not cpu_linear.available():
            continue
        # Each CPU's own kernels, whatever this CPU would pick.
        monkeypatch.setattr(cpu_linear, "onednn_pays", lambda kernels=kernels: kernels == "oneDNN")
        model = plain if kernels == "plain" else AutoModelForCausalLM.from_pretrained(path).eval()
        for reuse in (False, True):
            for bs in (1, 3, 16):
                for prompts_packed in (False, True):
                    backend = CausalLMBackend(model, tok, name="t", batch_size=bs, reuse_prefix=reuse,
                                              cpu_kernels=kernels != "plain", pack_prompts=prompts_packed)
                    assert {key for key in details.values() if key in backend.info.extra} == {detail} - {None}
                    assert ("packed_prompts" in backend.info.extra) == prompts_packed
                    scores = backend.score(prompts)
                    for got, want in zip(scores, reference):
                        for label in want:
                            assert got[label] == pytest.approx(want[label], abs=2e-4)


@pytest.mark.parametrize("sampling,passes", [("per-example", 1), ("fixed", 2)])
def test_prompts_are_batched_whatever_their_shots(sampling, passes, tiny_llama):
    """Per-example shots give every prompt its own prefix; the prompts still share one batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    exs = examples()
    sampler = ShotSampler(exs, "t", 1, sampling, same_split=True)
    builder = PromptBuilder(BUILTIN_TEMPLATES["harness"], LabelSpace.THREE_WAY)
    prompts = [builder.render(e, sampler.draw(e, 2)) for e in exs]
    fresh_passes = []  # forward passes that continue no cache: plain batches and the shared prefix
    forward = model.forward

    def counting(*args, **kwargs):
        if kwargs.get("past_key_values", kwargs.get("cache")) is None:
            fresh_passes.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    backend = CausalLMBackend(model, tok, name="t", batch_size=16, pack_prompts=False)  # padded batches
    model.forward = counting
    backend.score(prompts)
    # fixed: the prefix once, plus one plain batch for examples that were themselves drawn as shots
    assert len(fresh_passes) <= passes, fresh_passes
    if sampling == "per-example":
        assert fresh_passes == [len(prompts)]


def test_the_longest_prompts_run_in_smaller_passes(tiny_llama):
    """A pass holds at most batch-size prompts of the typical length: a few long ones cannot raise memory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    exs = list(examples(20))
    long_premise = " ".join([exs[0].premise] * 4)
    exs[:2] = [NLIExample(e.id, long_premise, e.hypothesis, e.label) for e in exs[:2]]
    builder = PromptBuilder(BUILTIN_TEMPLATES["harness"], LabelSpace.THREE_WAY)
    prompts = [builder.render(e, ()) for e in exs]
    rows = []
    forward = model.forward

    def counting(*args, **kwargs):
        if kwargs.get("past_key_values", kwargs.get("cache")) is None:
            rows.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    backend = CausalLMBackend(model, tok, name="t", batch_size=8, pack_prompts=False)  # padded batches
    model.forward = counting
    scores = backend.score(prompts)
    assert rows[0][0] < 8  # the two long prompts: a smaller pass
    assert sum(n for n, _ in rows) == len(prompts)
    plain = CausalLMBackend(model, tok, name="t", batch_size=1, pack_prompts=False).score(prompts)
    for got, want in zip(scores, plain):
        assert all(got[label] == pytest.approx(want[label], abs=2e-4) for label in want)


def test_a_model_without_an_output_embedding_module_scores_the_same(tiny_llama, monkeypatch):
    """The vocabulary projection is narrowed by a hook on the output embedding; without one, the scores
    are read from the full logits instead."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    builder = PromptBuilder(MULTI, LabelSpace.THREE_WAY)
    prompts = [builder.render(e, ()) for e in examples()]
    want = CausalLMBackend(model, tok, name="t", batch_size=4).score(prompts)
    monkeypatch.setattr(model, "get_output_embeddings", lambda: None)
    got = CausalLMBackend(model, tok, name="t", batch_size=4).score(prompts)
    for g, w in zip(got, want):
        assert all(g[label] == pytest.approx(w[label], abs=1e-5) for label in w)


def test_the_last_layers_mlp_runs_on_scored_positions_only(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    builder = PromptBuilder(BUILTIN_TEMPLATES["harness"], LabelSpace.THREE_WAY)
    prompts = [builder.render(e, ()) for e in examples(8)]
    rows = {}
    for i, layer in enumerate(model.model.layers):
        layer.mlp.gate_proj.register_forward_pre_hook(lambda _m, args, i=i: rows.setdefault(i, args[0].shape) and None)
    scores = CausalLMBackend(model, tok, name="t", batch_size=8, cpu_kernels=False, pack_prompts=False).score(prompts)
    assert rows[1][:2] == (8, 1) and rows[0][1] > 1  # the last layer: one position per prompt
    for got, prompt in zip(scores, prompts):
        want = naive(model, CausalLMBackend(model, tok, name="t", cpu_kernels=False), prompt)
        assert all(got[label] == pytest.approx(want[label], abs=2e-4) for label in want)


def test_encoded_prompts_keep_their_ids_as_four_byte_ints(tiny_llama):
    """A run keeps every prompt's token ids until it ends; they are stored at 4 bytes a token, equal to the
    tokenizer's ids, and a cached encoding is found again from the prompt's own strings."""
    from array import array

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    builder = PromptBuilder(BUILTIN_TEMPLATES["harness"], LabelSpace.THREE_WAY)
    prompts = [builder.render(e, ()) for e in examples(3)]
    backend = CausalLMBackend(model, tok, name="t", cpu_kernels=False)
    first = backend.encode(prompts)
    for enc, prompt in zip(first, prompts):
        assert isinstance(enc.context, array) and enc.context.itemsize == 4
        assert list(enc.context) == tok(prompt.context.rstrip(), add_special_tokens=False)["input_ids"]
    again = backend.encode([builder.render(e, ()) for e in examples(3)])  # equal prompts, new objects
    assert all(a is b for a, b in zip(again, first))


def test_the_tokenizers_word_cache_is_off_and_its_ids_stay_the_same(tiny_llama, monkeypatch):
    """The fast tokenizer's word cache grows with the distinct words of the data (8 MB over 1,000 ANLI
    prompts): the backend turns it off, and the ids are those of the tokenizer as loaded."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nli_eval.backends import base, causal

    sizes = []
    fake = SimpleNamespace(_tokenizer=SimpleNamespace(model=SimpleNamespace(_resize_cache=sizes.append)))
    assert base.without_word_cache(fake) is fake and sizes == [0]
    plain = object()
    assert base.without_word_cache(plain) is plain  # no Rust model: left as it is

    passed = []
    monkeypatch.setattr(causal, "without_word_cache", lambda tok: passed.append(tok) or base.without_word_cache(tok))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    texts = [f"{e.premise} {e.hypothesis}" for e in examples(20)]
    want = tok(texts, add_special_tokens=False)["input_ids"]
    backend = CausalLMBackend(model, tok, name="t", cpu_kernels=False)
    assert passed == [tok] and backend.tokenizer is tok
    assert tok(texts, add_special_tokens=False)["input_ids"] == want


def test_the_cache_goes_by_the_name_the_models_forward_takes():
    """Newer transformers name the key/value cache `cache` and deprecate `past_key_values`; remote code
    and older releases take `past_key_values`. Decorators over the forward do not hide its parameters."""
    import functools

    from nli_eval.backends.causal import cache_argument

    def renaming(function):
        @functools.wraps(function)
        def wrapper(self, *args, **kwargs):
            return function(self, *args, **kwargs)
        return wrapper

    class New:
        @renaming
        def forward(self, input_ids=None, cache=None, use_cache=None, **kwargs): ...

    class Old:
        def forward(self, input_ids=None, past_key_values=None, use_cache=None, **kwargs): ...

    class Both:
        def forward(self, input_ids=None, past_key_values=None, cache=None, **kwargs): ...

    assert cache_argument(New()) == "cache"
    assert cache_argument(Old()) == "past_key_values"
    assert cache_argument(Both()) == "past_key_values"
