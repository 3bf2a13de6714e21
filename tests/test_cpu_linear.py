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


def test_a_fused_mlp_runs_long_inputs_in_chunks(tiny_llama, monkeypatch):
    """Inputs longer than a chunk (here 7 positions: 36 rows is five whole chunks and a tail) match."""
    plain, model = load(tiny_llama), load(tiny_llama)
    cpu_linear.pack_linear_layers(model)
    monkeypatch.setattr(cpu_linear, "MLP_CHUNK", 7)
    x = ids(n=3, width=12)
    assert torch.allclose(logits(model, x), logits(plain, x), atol=1e-4, rtol=1e-4)
    mlp = model.model.layers[0].mlp
    h = torch.randn(1, 7, plain.config.hidden_size)
    with torch.inference_mode():
        assert torch.allclose(mlp(h), plain.model.layers[0].mlp(h), atol=1e-4, rtol=1e-4)  # exactly one chunk


def test_rms_norms_run_fused_where_they_compute_the_same(tiny_llama, tiny_gemma):
    """Llama-style norms (weight times the normalized input) run as torch's fused kernel, with the same
    logits; Gemma's (one plus weight) fail the probe and stay as they are."""
    plain, model = load(tiny_llama), load(tiny_llama)
    norms = sum("RMSNorm" in type(m).__name__ for m in model.modules())
    assert cpu_linear.fuse_rms_norms(model) == norms > 0
    assert type(model.model.norm).__name__ == "FusedRMSNorm"
    assert model.model.norm.weight is dict(model.named_parameters())["model.norm.weight"]
    x = ids()
    assert torch.equal(logits(model, x), logits(plain, x))
    assert cpu_linear.fuse_rms_norms(model) == norms  # a second call changes nothing
    gemma = load(tiny_gemma)
    assert cpu_linear.fuse_rms_norms(gemma) == 0
    assert not any(type(m).__name__ == "FusedRMSNorm" for m in gemma.modules())
