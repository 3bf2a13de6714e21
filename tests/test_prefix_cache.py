"""A batch continuing a shared few-shot prefix reads the prefix's keys and values once, not a copy per row."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from nli_eval.backends.causal import CausalLMBackend, cache_argument  # noqa: E402
from nli_eval.backends.prefix_cache import _shared_layer_class, batch_cache  # noqa: E402


def prefix_of(path, tokens=40):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    backend = CausalLMBackend(model, AutoTokenizer.from_pretrained(path), name="t", cpu_kernels=False)
    return model, backend._run_prefix(list(range(3, 3 + tokens)))


def continue_batch(model, cache, ids):
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=True, **{cache_argument(model): cache}).logits


def test_full_attention_layers_share_the_prefix_and_score_as_copies(tiny_llama):
    import copy

    model, prefix = prefix_of(tiny_llama)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in prefix.layers]
    ids = torch.randint(3, 200, (5, 7), generator=torch.Generator().manual_seed(2))
    shared = batch_cache(prefix, 5, keep=True)
    shared_layer = _shared_layer_class()
    assert all(type(layer) is shared_layer for layer in shared.layers)
    assert all(s.prefix_keys is p.keys for s, p in zip(shared.layers, prefix.layers))  # no copy
    copied = copy.deepcopy(prefix)
    copied.batch_select_indices(torch.zeros(5, dtype=torch.long))
    assert torch.allclose(continue_batch(model, shared, ids), continue_batch(model, copied, ids), atol=1e-5)
    # kept: the rows' own 7 positions, after the prefix's 40; the prefix itself is untouched
    assert shared.get_seq_length() == 47 and shared.layers[0].keys.shape[:3] == (5, prefix.layers[0].keys.shape[1], 7)
    for layer, (keys, values) in zip(prefix.layers, before):
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)
    # a selection of rows continues as the same rows of the copy do
    rows = torch.tensor([4, 1])
    shared.batch_select_indices(rows)
    copied.batch_select_indices(rows)
    more = torch.randint(3, 200, (2, 3), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(continue_batch(model, shared, more), continue_batch(model, copied, more), atol=1e-5)


def test_without_keep_nothing_of_the_rows_stays(tiny_llama):
    model, prefix = prefix_of(tiny_llama)
    shared = batch_cache(prefix, 4, keep=False)
    continue_batch(model, shared, torch.randint(3, 200, (4, 6), generator=torch.Generator().manual_seed(4)))
    assert all(layer.keys is None and layer.values is None for layer in shared.layers)
    assert shared.get_seq_length() == 40


def test_sliding_window_layers_are_copied_per_row(tiny_gemma):
    model, prefix = prefix_of(tiny_gemma)
    shared = batch_cache(prefix, 3, keep=False)
    for original, layer in zip(prefix.layers, shared.layers):
        if type(original).__name__ == "DynamicSlidingWindowLayer":
            assert type(layer) is type(original) and layer.keys.shape[0] == 3
        else:
            assert type(layer) is _shared_layer_class()
    assert any(type(layer).__name__ == "DynamicSlidingWindowLayer" for layer in prefix.layers)
