"""Linear layers with weights packed once for oneDNN, for float32 models on a CPU.

A plain `nn.Linear` hands its weight to the BLAS in row-major order on every call; oneDNN
takes it once, reordered into the blocked layout its kernels read, and runs the model's
matrix multiplies 10-30% faster on x86 CPUs with AVX-512. A gated MLP (`down(act(gate(x)) * up(x))`)
also gets its activation and product fused into the gate and up multiplies, which saves two
passes over its widest activations. Original weights are dropped, so memory does not grow.
With AVX2 alone, the BLAS is the faster of the two (`onednn_pays`): the layers stay as they are and
a gated MLP only runs in chunks, its activation and product in place (`chunk_gated_mlps`).

RMSNorm layers are swapped for one that reuses its temporaries where it gives the same output, and the
rotary embedding of queries and keys runs in two passes instead of five.

Nothing changes that cannot be shown to compute the same thing: only plain float32
`nn.Linear` layers on the CPU whose weight no other module shares (tied embeddings stay),
and a gated MLP only when its fused form matches the module's own output on a probe input.
"""

from __future__ import annotations

import functools
from typing import Any

# Packed kernels sum in another order than the BLAS: float32 outputs differ by ~1e-6 of their scale.
_TOLERANCE = 1e-4
# oneDNN post-ops tried for a gated MLP's activation: SiLU (Llama, Qwen, Mistral), tanh GELU (Gemma), GELU.
_ACTIVATIONS = (("swish", ""), ("gelu", "tanh"), ("gelu", "none"))
# A probe error this fraction of the tolerance is rounding alone (the two GELUs differ by far more),
# so the activations after it are not tried.
_EXACT = 0.1


# The linear layers of a gated MLP, `down_proj(act(gate_proj(x)) * up_proj(x))`, by their usual names.
GATED_PARTS = ("gate_proj", "up_proj", "down_proj")
# Positions a gated MLP runs at once (see GatedMLP.forward): packed for oneDNN, and on the BLAS, where
# a 2,048-token pass scored 2-3% faster in one chunk than in two (AVX2 host, 200 ANLI prompts, 135M
# model: 31.95-32.35 s against 32.95-33.07 s) for 12 MB more at the peak.
MLP_CHUNK = 1024
BLAS_MLP_CHUNK = 2048
# A weight left in a memory-mapped checkpoint is copied out this many bytes at a time.
COPY_SLICE_BYTES = 8 << 20

# oneDNN compiles and caches a kernel for every input shape it meets (0.6 MB each, up to 1024 of
# them), and every batch of a run has a new row count: left alone, a long run's memory grows with
# its number of batches. One forward pass needs about eleven shapes, so a small cache loses nothing.
# MKL (torch's BLAS on x86) keeps the work buffers of every matrix multiply for reuse, per thread and
# per size; the vocabulary projection of each new batch size adds about 5 MB that stays. Without
# that pool a 1,000-example run's peak memory is 16 MB lower, at the same speed.
KERNEL_CACHE_LIMITS = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "16", "LRU_CACHE_CAPACITY": "16", "MKL_DISABLE_FAST_MM": "1"}


def bound_kernel_caches() -> None:
    """Cap oneDNN's per-shape kernel caches and turn off MKL's buffer pool, unless the user set them;
    each is read when torch first uses the library."""
    import os

    for name, value in KERNEL_CACHE_LIMITS.items():
        os.environ.setdefault(name, value)


def _ops() -> Any:
    import torch

    return torch.ops.mkldnn


def _pack(weight: Any) -> Any:
    return _ops()._reorder_linear_weight(weight.detach(), None)


@functools.lru_cache(maxsize=None)
def _classes() -> tuple[Any, Any, Any]:
    import torch

    class PackedLinear(torch.nn.Module):
        """`nn.Linear` whose weight is held in oneDNN's packed layout (inference only)."""

        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.register_buffer("packed_weight", _pack(linear.weight), persistent=False)
            self.register_buffer("bias", _bias(linear), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _ops()._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"

    class GatedMLP(torch.nn.Module):
        """`down(act(gate(x)) * up(x))` run on at most `chunk` positions at a time."""

        activation: tuple[str, str]
        chunk = MLP_CHUNK

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rows = x.reshape(-1, x.shape[-1])
            if rows.shape[0] <= self.chunk:
                return self._rows(rows).view(*x.shape[:-1], -1)
            # The two widest activations ([positions, intermediate]) live for one chunk of positions
            # at a time, and every chunk but the last reuses the same compiled kernels. A long run's
            # peak memory is 35 MB lower (1,000 ANLI prompts, 135M model) at the same speed (oneDNN).
            step = self.chunk
            out = torch.cat([self._rows(rows[start:start + step]) for start in range(0, rows.shape[0], step)])
            return out.view(*x.shape[:-1], -1)

        def _rows(self, x: torch.Tensor) -> torch.Tensor:
            raise NotImplementedError

        def _activation_name(self) -> str:
            kind, algorithm = self.activation
            return f"activation={kind}{'/' + algorithm if algorithm else ''}"

    class PackedGatedMLP(GatedMLP):
        """A gated MLP with the activation and the product fused into oneDNN's multiplies."""

        def __init__(self, mlp: Any, activation: tuple[str, str]) -> None:
            super().__init__()
            self.activation = activation
            for name in GATED_PARTS:
                layer = getattr(mlp, name)
                self.register_buffer(f"{name}_weight", _pack(layer.weight), persistent=False)
                self.register_buffer(f"{name}_bias", _bias(layer), persistent=False)

        def _rows(self, x: torch.Tensor) -> torch.Tensor:
            ops = _ops()
            kind, algorithm = self.activation
            gate = ops._linear_pointwise(x, self.gate_proj_weight, self.gate_proj_bias, kind, [], algorithm)
            hidden = ops._linear_pointwise.binary(x, gate, self.up_proj_weight, self.up_proj_bias, "mul")
            del gate
            return ops._linear_pointwise(hidden, self.down_proj_weight, self.down_proj_bias, "none", [], "")

        def extra_repr(self) -> str:
            return f"{self._activation_name()}, packed=oneDNN"

    class ChunkedGatedMLP(GatedMLP):
        """A gated MLP on the model's own linear layers (the BLAS), its activation and product written in
        place into the gate's output: the same bits as the module's forward, two activations fewer."""

        chunk = BLAS_MLP_CHUNK

        def __init__(self, mlp: Any, activation: tuple[str, str]) -> None:
            super().__init__()
            self.activation = activation
            self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj

        def _rows(self, x: torch.Tensor) -> torch.Tensor:
            hidden = _activate_in_place(self.gate_proj(x), self.activation)
            hidden.mul_(self.up_proj(x))
            return self.down_proj(hidden)

        def extra_repr(self) -> str:
            return f"{self._activation_name()}, in place"

    return PackedLinear, PackedGatedMLP, ChunkedGatedMLP


def _activate_in_place(x: Any, activation: tuple[str, str]) -> Any:
    """x with oneDNN's activation post-op `activation` applied in place by torch's own kernel."""
    import torch
    import torch.nn.functional as F

    kind, algorithm = activation
    if kind == "swish":
        return F.silu(x, inplace=True)
    return torch._C._nn.gelu_(x, approximate=algorithm or "none")


@functools.lru_cache(maxsize=None)
def onednn_pays() -> bool:
    """Whether this CPU multiplies faster with oneDNN's packed weights than with the BLAS: with AVX-512.

    Decided by the CPU's vector instructions, not timed, so a host always computes the same bits. With
    AVX-512 (Intel Xeon, AMD EPYC) the packed kernels ran 10-30% faster at a 135M model's shapes. With
    AVX2 alone (a 2-core AMD EPYC) MKL ran 5-15% faster than them, and the activation post-ops made the
    gate's multiply 35-65% slower, against 0.5-3.3 ms for the activation after it; packing also took
    2 s of the load. There a 200-example zero-shot run scored in 36.3-37.3 s on the BLAS, against
    39.0-40.5 s packed with the activation after the multiply and 42.4-43.1 s fully fused.
    """
    import torch

    return available() and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


@functools.lru_cache(maxsize=None)
def _norm_class() -> Any:
    import torch

    class FusedRMSNorm(torch.nn.Module):
        """An RMSNorm doing the model's own arithmetic (the mean of squares, then the input times its
        reciprocal root, then times the weight) with its temporaries reused in place: the same bits in
        0.36 ms where the model's module takes 0.49 ms and torch's `rms_norm` 0.53 ms, for 16 prompts of
        137 tokens (SmolLM2-135M)."""

        def __init__(self, weight: torch.nn.Parameter, eps: float) -> None:
            super().__init__()
            self.weight, self.eps = weight, eps

        def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
            if out is None:
                scale = x.pow(2).mean(-1, keepdim=True).add_(self.eps).rsqrt_()
                return torch.mul(x, scale).mul_(self.weight)
            # Into `out` (x's shape): the squares go there first, then the output over them.
            scale = torch.pow(x, 2, out=out).mean(-1, keepdim=True).add_(self.eps).rsqrt_()
            return torch.mul(x, scale, out=out).mul_(self.weight)

        def extra_repr(self) -> str:
            return f"{tuple(self.weight.shape)}, eps={self.eps}, fused"

    return FusedRMSNorm


def _fused_norm(module: Any) -> Any:
    """The fused form of an RMSNorm module, or None when it is something else or computes otherwise
    (Gemma's scales by 1 + weight, and fails the probe)."""
    import torch

    weight = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if (type(module) is _norm_class() or "RMSNorm" not in type(module).__name__
            or not isinstance(weight, torch.nn.Parameter) or weight.dim() != 1 or weight.device.type != "cpu"
            or weight.dtype != torch.float32 or not isinstance(eps, float)
            or module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook")):
        return None
    candidate = _norm_class()(weight, eps)
    x = torch.randn(2, 5, weight.shape[0], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        try:
            want, got = module(x), candidate(x)
        except Exception:
            return None
    return candidate if _close(got, want) else None


def fuse_rms_norms(model: Any) -> int:
    """Swap the model's float32 CPU RMSNorm modules for the fused form where a probe shows the same
    output; returns how many of the model's norms run fused."""
    for name, module in list(model.named_modules()):
        candidate = _fused_norm(module) if name else None
        if candidate is not None:
            model.set_submodule(name, candidate)
    return sum(type(module) is _norm_class() for module in model.modules())


def _rotate(x: Any, cos: Any, sin: Any, out: Any = None) -> Any:
    """`x * cos + rotate_half(x) * sin`, each half of the output written once: two passes over x where
    the plain form makes five (two products, a negation, a concatenation and a sum). Written into `out`
    (x's shape) when given."""
    import torch

    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    low, high = out[..., :half], out[..., half:]
    torch.mul(x1, cos[..., :half], out=low)
    low.addcmul_(x2, sin[..., :half], value=-1)
    torch.mul(x2, cos[..., half:], out=high)
    high.addcmul_(x1, sin[..., half:])
    return out


def _fused_rotary(original: Any) -> Any:
    """A drop-in for a model's `apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)`; any other call
    (more arguments, mixed dtypes, partial rotation, an odd width) goes to the model's own function."""
    import torch

    def apply_rotary_pos_emb(q: Any, k: Any, cos: Any, sin: Any, unsqueeze_dim: int = 1, *args: Any,
                             **kwargs: Any) -> Any:
        if (args or kwargs or not isinstance(unsqueeze_dim, int) or q.shape[-1] % 2
                or not q.shape[-1] == k.shape[-1] == cos.shape[-1] == sin.shape[-1]
                or not q.dtype == k.dtype == cos.dtype == sin.dtype):
            return original(q, k, cos, sin, unsqueeze_dim, *args, **kwargs)
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        if (torch.broadcast_shapes(q.shape, cos.shape, sin.shape) != q.shape
                or torch.broadcast_shapes(k.shape, cos.shape, sin.shape) != k.shape):
            return original(q, k, cos.squeeze(unsqueeze_dim), sin.squeeze(unsqueeze_dim), unsqueeze_dim)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)

    apply_rotary_pos_emb.fused = True  # type: ignore[attr-defined]
    return apply_rotary_pos_emb


def _same_rotation(fused: Any, original: Any) -> bool:
    """Whether the fused rotation matches the model's own on a probe (Llama's half-split rotation does;
    an interleaved one, as in GPT-J, does not)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 5, 16, generator=generator), torch.randn(2, 1, 5, 16, generator=generator)
    cos, sin = torch.randn(2, 5, 16, generator=generator), torch.randn(2, 5, 16, generator=generator)
    with torch.inference_mode():
        try:
            want, got = original(q, k, cos, sin), fused(q, k, cos, sin)
        except Exception:
            return False
    return (isinstance(want, tuple) and len(want) == 2 and all(isinstance(w, torch.Tensor) for w in want)
            and all(_close(g, w) for g, w in zip(got, want)))


def fuse_rotary(model: Any) -> int:
    """Give each attention module whose forward calls its file's `apply_rotary_pos_emb` the two-pass
    rotation, where a probe shows the same result; returns how many attention modules use it.

    The module keeps its class's own forward code, decorators included: only the name
    `apply_rotary_pos_emb` in that code resolves to the fused function (a copy of the module file's
    globals), so no other model in the process and nothing else in the forward changes. About 2% of
    a 135M model's CPU scoring time.
    """
    import types

    probed: dict[int, Any] = {}
    for module in model.modules():
        if "forward" in vars(module):  # fused already, or a forward of its own
            continue
        forward = getattr(type(module), "forward", None)
        inner = _innermost(forward)
        code = getattr(inner, "__code__", None)
        if code is None or "apply_rotary_pos_emb" not in code.co_names:
            continue
        original = inner.__globals__.get("apply_rotary_pos_emb")
        if original is None or getattr(original, "fused", False):
            continue
        if id(forward) not in probed:
            fused = _fused_rotary(original)
            scope = dict(inner.__globals__, apply_rotary_pos_emb=fused)
            rebuilt = _rewrap(forward, inner, _copy_function(inner, scope, inner.__closure__))
            probed[id(forward)] = rebuilt if rebuilt is not None and _same_rotation(fused, original) else None
        if probed[id(forward)] is not None:
            module.forward = types.MethodType(probed[id(forward)], module)
    return fused_rotary_layers(model)


def fused_rotary_layers(model: Any) -> int:
    """Attention modules of the model that rotate queries and keys with the fused function."""
    import types

    return sum(isinstance(vars(m).get("forward"), types.MethodType)
               and getattr(_innermost(vars(m)["forward"].__func__).__globals__.get("apply_rotary_pos_emb"),
                           "fused", False)
               for m in model.modules())


def _innermost(function: Any) -> Any:
    """The function under any `functools.wraps` decorators (transformers deprecates arguments that way)."""
    import inspect

    try:
        return inspect.unwrap(function) if function is not None else None
    except ValueError:  # a cycle of __wrapped__
        return None


def _copy_function(function: Any, scope: dict, closure: tuple | None) -> Any:
    import types

    copy = types.FunctionType(function.__code__, scope, function.__name__, function.__defaults__, closure)
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__dict__.update(function.__dict__)
    copy.__qualname__ = function.__qualname__
    return copy


def _holds(cell: Any, value: Any) -> bool:
    try:
        return cell.cell_contents is value
    except ValueError:  # an empty cell
        return False


def _rewrap(outer: Any, inner: Any, replacement: Any) -> Any:
    """`outer` with `inner`, somewhere under its decorators, swapped for `replacement`; None when a
    decorator holds the function it wraps anywhere but in a closure cell (then it cannot be swapped)."""
    import types

    if outer is inner:
        return replacement
    wrapped = outer.__wrapped__
    below = _rewrap(wrapped, inner, replacement)
    cells = getattr(outer, "__closure__", None) or ()
    holding = [_holds(cell, wrapped) for cell in cells]
    if below is None or not any(holding):
        return None
    closure = tuple(types.CellType(below) if held else cell for cell, held in zip(cells, holding))
    copy = _copy_function(outer, outer.__globals__, closure)
    copy.__wrapped__ = below
    return copy


def _bias(linear: Any) -> Any:
    return linear.bias.detach() if linear.bias is not None else None


def _close(got: Any, want: Any) -> bool:
    return got.shape == want.shape and bool((got - want).abs().max() <= _TOLERANCE * want.abs().max().clamp(min=1e-6))


def available() -> bool:
    """Whether this torch build packs linear weights for oneDNN and agrees with `F.linear` on a probe."""
    import torch

    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    ops = _ops()
    if not all(hasattr(ops, name) for name in ("_linear_pointwise", "_reorder_linear_weight")):
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        linear = torch.nn.Linear(48, 40)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(40, 48, generator=generator))
        x = torch.randn(3, 5, 48, generator=generator)
        with torch.inference_mode():
            return _close(_classes()[0](linear)(x), linear(x))
    except Exception:  # an op that exists but fails on this CPU: keep the plain layers
        return False


def _float32_cpu_linear(module: Any) -> bool:
    import torch

    return (type(module) is torch.nn.Linear and module.weight.device.type == "cpu"
            and module.weight.dtype == torch.float32)


def _packable(module: Any, uses: dict[int, int]) -> bool:
    """A float32 CPU linear layer whose weight packing may drop: no other module uses it, no hook sees it."""
    return (_float32_cpu_linear(module) and uses.get(id(module.weight), 0) == 1
            and not module._forward_hooks and not module._forward_pre_hooks and not hasattr(module, "_hf_hook"))


def _fused_mlp(mlp: Any, uses: dict[int, int]) -> Any:
    """The packed, fused form of a gated MLP, or None when the module is something else."""
    if not all(_packable(getattr(mlp, name, None), uses) for name in GATED_PARTS):
        return None
    return _gated_form(mlp, _classes()[1])


def _chunked_mlp(mlp: Any) -> Any:
    """The chunked, in-place form of a gated MLP, or None when the module is something else. Its layers
    keep running as themselves, so they need not be packable."""
    if not all(_float32_cpu_linear(getattr(mlp, name, None)) for name in GATED_PARTS):
        return None
    return _gated_form(mlp, _classes()[2])


def _gated_form(mlp: Any, form: Any) -> Any:
    """`form(mlp, activation)` with the activation whose output matches the module's own on a probe, or
    None when none does (the module is not `down(act(gate(x)) * up(x))`). A module whose class names its
    activation (`gated_activation`, nli-eval's own forward) is taken at its word."""
    import torch

    if mlp._forward_hooks or mlp._forward_pre_hooks or hasattr(mlp, "_hf_hook"):
        return None
    known = getattr(type(mlp), "gated_activation", None)
    if known in _ACTIVATIONS:
        try:
            return form(mlp, known)
        except Exception:
            return None
    x = torch.randn(2, 3, mlp.gate_proj.in_features, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        try:
            want = mlp(x)
            candidate = form(mlp, _ACTIVATIONS[0])
        except Exception:
            return None
        limit = _TOLERANCE * float(want.abs().max().clamp(min=1e-6))
        best, best_error = None, float("inf")
        for activation in _ACTIVATIONS:  # the weights are packed once; only the activation changes
            candidate.activation = activation
            try:
                got = candidate(x)
            except Exception:  # a post-op this oneDNN build lacks
                continue
            if got.shape != want.shape:
                continue
            error = float((got - want).abs().max())
            if error < best_error:
                best, best_error = activation, error
            if error <= limit * _EXACT:  # rounding alone: no other activation comes this close
                break
    if best is None or best_error > limit:
        return None
    candidate.activation = best
    return candidate


def chunk_gated_mlps(model: Any) -> int:
    """Swap the model's float32 CPU gated MLPs for the chunked, in-place form where a probe shows the same
    output; returns how many of the model's MLPs run chunked. The linear layers stay as they are."""
    chunked = _classes()[2]
    for name, module in list(model.named_modules()):
        if name and type(module) is not chunked and hasattr(module, "gate_proj"):
            candidate = _chunked_mlp(module)
            if candidate is not None:
                model.set_submodule(name, candidate)
    return sum(type(module) is chunked for module in model.modules())


def packed_layers(model: Any) -> int:
    """Linear layers of the model that run packed (a fused MLP counts as its three)."""
    counts = {"PackedLinear": 1, "PackedGatedMLP": 3}
    return sum(counts.get(type(module).__name__, 0) for module in model.modules())


def pack_linear_layers(model: Any) -> int:
    """Swap the model's float32 CPU linear layers for packed ones; returns how many layers now run packed."""
    uses: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        uses[id(param)] = uses.get(id(param), 0) + 1
    targets = [name for name, module in model.named_modules() if name and _packable(module, uses)]
    if not targets or not available():
        return packed_layers(model)
    packed_linear = _classes()[0]
    file_maps = _file_mappings()
    done: set[str] = set()
    # Gated MLPs first, whole; then every other linear layer. One module is swapped at a time and
    # its plain weights released before the next, so memory never holds two copies of the model.
    for mlp_name in sorted({name.rsplit(".", 1)[0] for name in targets if name.endswith(".gate_proj")}):
        mlp = model.get_submodule(mlp_name)
        fused = _fused_mlp(mlp, uses)
        if fused is not None:
            _replace(model, mlp_name, fused, file_maps)
            done.update(f"{mlp_name}.{part}" for part in GATED_PARTS)
        del mlp, fused
    for name in targets:
        if name not in done:
            _replace(model, name, packed_linear(model.get_submodule(name)), file_maps)
    # Weights read from a memory-mapped checkpoint keep the whole map (and every page packing read)
    # resident while any tensor still points into it; copying out the few unpacked ones closes it.
    for param in model.parameters():
        if _in_file_map(param, file_maps):
            param.data = _copy_out(param.data)
    return packed_layers(model)


def _copy_out(tensor: Any) -> Any:
    """An in-memory copy of a tensor in a memory-mapped checkpoint, made a slice at a time with each
    slice's file pages dropped once copied: the copy never sits beside the whole mapped original. For
    a tied embedding (113 MB in SmolLM2-135M) a plain clone was the load's peak."""
    import torch

    if not tensor.is_contiguous():
        return tensor.clone()
    out = torch.empty_like(tensor)
    src, dst = tensor.view(-1), out.view(-1)
    step = max(1, COPY_SLICE_BYTES // tensor.element_size())
    with torch.no_grad():
        for start in range(0, src.numel(), step):
            piece = src[start:start + step]
            dst[start:start + step].copy_(piece)
            _drop_pages(piece.data_ptr(), piece.numel() * piece.element_size())
    return out


def _replace(model: Any, name: str, module: Any, file_maps: list[tuple[int, int]]) -> None:
    old = model.get_submodule(name)
    model.set_submodule(name, module)
    for weight in old.parameters():
        _drop_file_pages(weight, file_maps)


def _file_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's file-backed memory maps (a memory-mapped checkpoint); Linux only."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def _drop_file_pages(tensor: Any, file_maps: list[tuple[int, int]]) -> None:
    """Return the pages of a replaced weight read from a memory-mapped checkpoint to the page cache.

    They were read once, to pack them; left mapped they would count in resident memory beside the
    packed copy until the whole checkpoint map closes. Only whole pages inside the tensor are dropped,
    and only in a file-backed map, where a later read would fault in the same bytes from the file.
    """
    if _in_file_map(tensor, file_maps):
        _drop_pages(tensor.data_ptr(), tensor.untyped_storage().nbytes())


def _drop_pages(start: int, size: int) -> None:
    """MADV_DONTNEED on the whole pages inside [start, start + size) of a file-backed map."""
    import ctypes
    import mmap

    from .base import libc

    if libc() is None:
        return
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, (start + size) // page * page
    if last > first:
        try:
            libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), 4)  # MADV_DONTNEED
        except AttributeError:
            pass


def _in_file_map(tensor: Any, file_maps: list[tuple[int, int]]) -> bool:
    start, size = tensor.data_ptr(), tensor.untyped_storage().nbytes()
    return any(lo <= start and start + size <= hi for lo, hi in file_maps)
