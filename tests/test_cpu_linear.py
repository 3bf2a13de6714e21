"""Packed oneDNN linear layers compute what the plain layers do, and touch nothing else."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from nli_eval.backends import cpu_linear  # noqa: E402

pytestmark = pytest.mark.skipif(not cpu_linear.available(), reason="this torch build cannot pack weights for oneDNN")


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


def ids(n=3, width=12, vocab=200):
    return torch.randint(3, vocab, (n, width), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("shape,activation,packed", [("tiny_llama", "swish", 15), ("tiny_gemma", "gelu/tanh", 14)])
def test_packed_model_matches_the_plain_one(shape, activation, packed, request):
    path = request.getfixturevalue(shape)
    plain, model = load(path), load(path)
    assert cpu_linear.pack_linear_layers(model) == packed
    mlp = model.model.layers[0].mlp
    assert type(mlp).__name__ == "PackedGatedMLP" and activation in repr(mlp)
    x = ids()
    assert torch.allclose(logits(model, x), logits(plain, x), atol=1e-4, rtol=1e-4)
    assert cpu_linear.pack_linear_layers(model) == packed  # a second call changes nothing


def test_tied_output_embedding_is_left_alone(tiny_gemma):
    model = load(tiny_gemma)
    cpu_linear.pack_linear_layers(model)
    assert type(model.lm_head) is torch.nn.Linear
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_a_differently_gated_mlp_is_not_fused(tiny_llama):
    """An MLP whose forward is not down(act(gate(x)) * up(x)) keeps its own forward; its layers still pack."""
    plain, model = load(tiny_llama), load(tiny_llama)
    for m in (plain, model):
        for layer in m.model.layers:
            mlp = layer.mlp
            mlp.forward = (lambda mlp: lambda x: mlp.down_proj(mlp.act_fn(mlp.up_proj(x)) * mlp.gate_proj(x)))(mlp)
    assert cpu_linear.pack_linear_layers(model) == 15
    assert type(model.model.layers[0].mlp).__name__ == "LlamaMLP"
    assert type(model.model.layers[0].mlp.up_proj).__name__ == "PackedLinear"
    x = ids()
    assert torch.allclose(logits(model, x), logits(plain, x), atol=1e-4, rtol=1e-4)


def test_nothing_is_packed_without_onednn_or_for_other_dtypes(tiny_llama, monkeypatch):
    model = load(tiny_llama)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert cpu_linear.pack_linear_layers(model) == 0
    monkeypatch.undo()
    assert type(model.model.layers[0].mlp.up_proj) is torch.nn.Linear
    half = load(tiny_llama).to(torch.bfloat16)
    assert cpu_linear.pack_linear_layers(half) == 0


def test_packing_drops_the_plain_weights(tiny_llama):
    model = load(tiny_llama)
    before = {name for name, _ in model.named_parameters()}
    cpu_linear.pack_linear_layers(model)
    left = {name for name, _ in model.named_parameters()}
    assert left < before and all("proj" not in name for name in left)


def test_grouped_query_attention_matches_sdpa(tiny_llama, tiny_gemma):
    """Short unmasked prompts repeat the key/value heads; everything else goes to transformers' SDPA."""
    from nli_eval.backends import cpu_attention

    for path in (tiny_llama, tiny_gemma):
        plain, model = load(path), load(path)
        assert cpu_attention.use_for(model) and not cpu_attention.use_for(model)  # once
        assert model.config._attn_implementation == cpu_attention.NAME
        assert plain.config._attn_implementation == "sdpa"
        for width in (12, 40):  # the Gemma-shaped model's 16-token window needs a mask at 40
            x = ids(width=width)
            assert torch.allclose(logits(model, x), logits(plain, x), atol=1e-5, rtol=1e-5)
        mask = torch.ones_like(x)
        mask[0, :5] = 0
        with torch.inference_mode():
            got, want = model(input_ids=x, attention_mask=mask).logits, plain(input_ids=x, attention_mask=mask).logits
        assert torch.allclose(got[:, 5:], want[:, 5:], atol=1e-5, rtol=1e-5)
