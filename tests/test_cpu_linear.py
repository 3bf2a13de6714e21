"""Packed oneDNN linear layers compute what the plain layers do, and touch nothing else."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from nli_eval.backends import cpu_linear  # noqa: E402
# The name the attention-like modules below call, as a model file's attention forward does.
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb  # noqa: E402

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


def test_weights_left_unpacked_are_copied_out_of_the_checkpoint_map_slice_by_slice(tiny_gemma, monkeypatch):
    """The tied embedding stays unpacked: it is copied out of the memory-mapped checkpoint a slice at a
    time, each slice's file pages dropped as it goes, and ends equal to the original."""
    plain, model = load(tiny_gemma), load(tiny_gemma)
    weight = model.model.embed_tokens.weight
    if not cpu_linear._in_file_map(weight, cpu_linear._file_mappings()):
        pytest.skip("this platform loads checkpoints without a memory map")
    dropped = []
    drop = cpu_linear._drop_pages
    monkeypatch.setattr(cpu_linear, "_drop_pages", lambda start, size: (dropped.append(size), drop(start, size)))
    monkeypatch.setattr(cpu_linear, "COPY_SLICE_BYTES", 4096)
    cpu_linear.pack_linear_layers(model)
    weight = model.model.embed_tokens.weight
    assert model.lm_head.weight is weight
    assert not cpu_linear._in_file_map(weight, cpu_linear._file_mappings())
    assert torch.equal(weight, plain.model.embed_tokens.weight)
    assert dropped.count(4096) >= weight.numel() * 4 // 4096 - 1  # one drop a slice, not one at the end
    x = ids()
    assert torch.allclose(logits(model, x), logits(plain, x), atol=1e-4, rtol=1e-4)


def test_copy_out_keeps_a_strided_tensor_whole():
    t = torch.arange(24.0).view(4, 6).t()
    out = cpu_linear._copy_out(t)
    assert torch.equal(out, t) and out.data_ptr() != t.data_ptr()


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
    monkeypatch.setattr(type(model.model.layers[0].mlp), "chunk", 7)
    x = ids(n=3, width=12)
    assert torch.allclose(logits(model, x), logits(plain, x), atol=1e-4, rtol=1e-4)
    mlp = model.model.layers[0].mlp
    h = torch.randn(1, 7, plain.config.hidden_size)
    with torch.inference_mode():
        assert torch.allclose(mlp(h), plain.model.layers[0].mlp(h), atol=1e-4, rtol=1e-4)  # exactly one chunk


@pytest.mark.parametrize("shape,activation", [("tiny_llama", "swish"), ("tiny_gemma", "gelu/tanh")])
def test_chunked_mlps_compute_the_same_bits_on_the_same_weights(shape, activation, request, monkeypatch):
    """The BLAS form of a gated MLP: the model's own linear layers, the activation and product in place.
    Run whole, the logits are those of the plain model to the bit; in chunks, to rounding (the BLAS
    may block fewer rows otherwise)."""
    path = request.getfixturevalue(shape)
    plain, model = load(path), load(path)
    weights = dict(model.named_parameters())
    layers = len(model.model.layers)
    assert cpu_linear.chunk_gated_mlps(model) == layers
    mlp = model.model.layers[0].mlp
    assert type(mlp).__name__ == "ChunkedGatedMLP" and activation in repr(mlp)
    assert all(weights[name] is param for name, param in model.named_parameters())  # nothing copied
    assert set(dict(model.named_parameters())) == set(weights)
    x = ids()
    assert torch.equal(logits(model, x), logits(plain, x))
    monkeypatch.setattr(type(mlp), "chunk", 7)  # 36 rows: five whole chunks and a tail
    assert torch.allclose(logits(model, x), logits(plain, x), atol=1e-5, rtol=1e-5)
    assert cpu_linear.chunk_gated_mlps(model) == layers  # a second call changes nothing


def test_a_differently_gated_mlp_is_not_chunked(tiny_llama):
    model = load(tiny_llama)
    for layer in model.model.layers:
        mlp = layer.mlp
        mlp.forward = (lambda mlp: lambda x: mlp.down_proj(mlp.act_fn(mlp.up_proj(x)) * mlp.gate_proj(x)))(mlp)
    assert cpu_linear.chunk_gated_mlps(model) == 0
    assert type(model.model.layers[0].mlp).__name__ == "LlamaMLP"
    assert cpu_linear.chunk_gated_mlps(load(tiny_llama).to(torch.bfloat16)) == 0


@pytest.mark.parametrize("capability,pays", [("AVX512", True), ("AVX512_VNNI", True), ("AVX2", False),
                                              ("DEFAULT", False)])
def test_onednn_packs_only_where_the_cpu_has_avx512(capability, pays, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    cpu_linear.onednn_pays.cache_clear()
    try:
        assert cpu_linear.onednn_pays() is pays
    finally:
        monkeypatch.undo()
        cpu_linear.onednn_pays.cache_clear()


def test_rms_norms_run_fused_where_they_compute_the_same(tiny_llama, tiny_gemma):
    """Llama-style norms (weight times the normalized input) run fused, with the same
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


def test_rotary_runs_fused_in_every_attention_module(tiny_llama, tiny_gemma):
    """Each attention module rotates queries and keys with the two-pass function, through its class's own
    forward code; the logits stay those of the plain model, and other models of the class are untouched."""
    for path in (tiny_llama, tiny_gemma):
        plain, model = load(path), load(path)
        layers = model.config.num_hidden_layers
        assert cpu_linear.fuse_rotary(model) == layers
        assert cpu_linear.fuse_rotary(model) == layers  # a second call changes nothing
        assert cpu_linear.fused_rotary_layers(plain) == 0
        x = ids()
        assert torch.allclose(logits(model, x), logits(plain, x), atol=1e-5, rtol=1e-5)


def renaming(old, new):
    """A `functools.wraps` decorator that renames a keyword, as transformers deprecates arguments."""
    import functools

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)
        return wrapper
    return decorate


def registered(function):
    """A decorator that keeps the function in a table rather than a closure cell: it cannot be rebuilt."""
    import functools

    table = {"function": function}

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return table["function"](*args, **kwargs)
    return wrapper


def test_rotary_fuses_under_decorators_and_keeps_them():
    from transformers.models.llama import modeling_llama

    class Rotating(torch.nn.Module):
        @renaming("angles", "cos_sin")
        def forward(self, q, k, cos_sin):
            return apply_rotary_pos_emb(q, k, *cos_sin)

    class Opaque(torch.nn.Module):
        @registered
        def forward(self, q, k, cos_sin):
            return apply_rotary_pos_emb(q, k, *cos_sin)

    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 2, 6, 8, generator=g)
    cos_sin = (torch.randn(2, 6, 8, generator=g), torch.randn(2, 6, 8, generator=g))
    want = modeling_llama.apply_rotary_pos_emb(q, k, *cos_sin)
    module, plain = Rotating(), Rotating()
    assert cpu_linear.fuse_rotary(module) == 1
    assert cpu_linear.fused_rotary_layers(plain) == 0
    for got, expected in zip(module(q, k, angles=cos_sin), want):  # the decorator still renames
        assert torch.allclose(got, expected, atol=1e-6)
    assert cpu_linear.fuse_rotary(Opaque()) == 0  # left as it is, not half rebuilt


def test_rotary_probe_and_fallbacks():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_rotary

    def interleaved(q, k, cos, sin, unsqueeze_dim=1):  # GPT-J style: pairs of neighbours, not halves
        def rotate(x):
            return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        return q * cos + rotate(q) * sin, k * cos + rotate(k) * sin

    assert cpu_linear._same_rotation(cpu_linear._fused_rotary(llama_rotary), llama_rotary)
    assert not cpu_linear._same_rotation(cpu_linear._fused_rotary(interleaved), interleaved)
    fused = cpu_linear._fused_rotary(llama_rotary)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 6, 4, 8, generator=g).transpose(1, 2), torch.randn(2, 2, 6, 8, generator=g)
    cos, sin = torch.randn(1, 6, 8, generator=g), torch.randn(1, 6, 8, generator=g)
    for got, want in zip(fused(q, k, cos, sin), llama_rotary(q, k, cos, sin)):  # strided q, shared positions
        assert torch.allclose(got, want, atol=1e-6)
    calls = []

    def partial(q, k, cos, sin, unsqueeze_dim=1):  # rotates the first cos.shape[-1] of the head width
        calls.append(unsqueeze_dim)
        width = cos.shape[-1]
        q_rot, k_rot = llama_rotary(q[..., :width], k[..., :width], cos, sin, unsqueeze_dim)
        return torch.cat((q_rot, q[..., width:]), -1), torch.cat((k_rot, k[..., width:]), -1)

    narrow = cpu_linear._fused_rotary(partial)
    narrow(q, k, cos[..., :4], sin[..., :4].clone())  # rotates part of the width: the model's own function
    narrow(q.double(), k.double(), cos.double(), sin)  # mixed dtypes: the model's own function
    assert calls == [1, 1]
