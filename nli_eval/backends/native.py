"""Llama-family checkpoints read and run without transformers, for float32 scoring on a CPU.

Importing transformers and building a model through it takes 2-3 s of a 2-core CPU, about a tenth
of a small model's whole run over a few hundred prompts. A local checkpoint of a plain Llama or Qwen2
architecture (default rotary embedding, no sliding window, SiLU MLP) needs none of it: its config.json,
safetensors weights and tokenizer.json are read directly into a module tree with the checkpoint's own
names and the model's own arithmetic, so the CPU kernels (`cpu_linear`) and the packed passes
(`packing`) apply to it unchanged. Anything else, or a checkpoint that turns out not to match when
read, loads through transformers as before.

The forward runs without a key/value cache: packed passes and right-padded batches, which is all a
zero-shot or per-example few-shot run with one-token label words needs. A group of prompts that needs
a cache (a shared few-shot prefix, label words of several tokens) has the backend load the model
through transformers at that point (`CausalLMBackend._use_transformers_model`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..modeling import LoadOptions, ModelRef, gguf_of
from .base import Workspace

# The architectures read here, by config.json's model_type, and the class name each must declare.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# Tokenizer classes that transformers builds from tokenizer.json as it stands, so `tokenizers` alone
# encodes every text to the same ids (tests/test_native.py compares them). Others, such as Llama 2's
# sentencepiece-derived LlamaTokenizer, may rebuild parts of it from tokenizer_config.json.
TOKENIZER_CLASSES = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast", "GPT2Tokenizer",
                               "GPT2TokenizerFast", "Qwen2Tokenizer", "Qwen2TokenizerFast"})
FLOAT32 = ("auto", "float32", "fp32")


class NotNative(Exception):
    """The checkpoint's files do not match what its config declares; it loads through transformers."""


@dataclass(frozen=True)
class NativeSpec:
    """What the forward needs from a checkpoint's config.json (read by `native_spec`)."""

    folder: Path
    model_type: str
    architectures: tuple[str, ...]
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    bos_token: str | None
    model_max_length: int | None
    # Tokens tokenizer_config.json declares whole (special or added): transformers adds any that
    # tokenizer.json lacks, so they must all be there for `tokenizers` alone to split text alike.
    declared_tokens: tuple[str, ...] = ()
    is_encoder_decoder: bool = False  # read by `loader.detect_kind`, as on a transformers config


def _read_json(path: Path) -> Mapping[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _rope_theta(config: Mapping[str, Any]) -> float | None:
    """The rotary base of a default (unscaled) rotary embedding, in either config layout; else None."""
    params = config.get("rope_parameters")
    if params is None:
        if config.get("rope_scaling") is not None:
            return None
        params = {"rope_theta": config.get("rope_theta", 10000.0)}
    if not isinstance(params, dict) or params.get("rope_type", "default") != "default":
        return None
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        return None
    theta = params.get("rope_theta")
    return float(theta) if isinstance(theta, (int, float)) and theta > 0 else None


def _int(config: Mapping[str, Any], key: str) -> int | None:
    value = config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def native_spec(ref: ModelRef, load: LoadOptions, kind: str, add_bos: bool | None, device: str) -> NativeSpec | None:
    """The spec of a checkpoint the native forward runs as transformers would, or None for any other."""
    if (ref.local is None or gguf_of(ref, load) or load.trust_remote_code or load.device_map
            or load.dtype not in FLOAT32 or device != "cpu" or kind not in ("auto", "causal") or add_bos):
        return None
    folder = ref.local
    config = _read_json(folder / "config.json")
    tokenizer = _read_json(folder / "tokenizer_config.json") or {}
    if config is None or not (folder / "tokenizer.json").is_file() or not list(folder.glob("*.safetensors")):
        return None
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES or config.get("architectures") != [ARCHITECTURES[model_type]]:
        return None
    if tokenizer.get("tokenizer_class") not in TOKENIZER_CLASSES or tokenizer.get("add_prefix_space"):
        return None
    if config.get("hidden_act", "silu") != "silu" or config.get("quantization_config") is not None:
        return None
    if model_type == "llama" and (config.get("attention_bias") or config.get("mlp_bias")
                                  or config.get("pretraining_tp", 1) not in (1, None)):
        return None
    if model_type == "qwen2" and (config.get("use_sliding_window")
                                  or any(t != "full_attention" for t in config.get("layer_types") or [])):
        return None
    theta = _rope_theta(config)
    sizes = {key: _int(config, key) for key in ("vocab_size", "hidden_size", "intermediate_size",
                                                 "num_hidden_layers", "num_attention_heads")}
    eps = config.get("rms_norm_eps", 1e-6)
    if theta is None or None in sizes.values() or not isinstance(eps, (int, float)):
        return None
    heads = sizes["num_attention_heads"]
    kv_heads = _int(config, "num_key_value_heads") or heads
    head_dim = _int(config, "head_dim") or sizes["hidden_size"] // heads
    if heads % kv_heads or head_dim % 2:
        return None
    bos = tokenizer.get("bos_token")
    bos = bos.get("content") if isinstance(bos, dict) else bos
    max_length = tokenizer.get("model_max_length")
    declared = [entry.get("content") for entry in (tokenizer.get("added_tokens_decoder") or {}).values()
                if isinstance(entry, dict)]
    for key in ("additional_special_tokens", "extra_special_tokens"):
        extra = tokenizer.get(key) or []
        declared += list(extra.values()) if isinstance(extra, dict) else list(extra) if isinstance(extra, list) else []
    for key in ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "sep_token", "cls_token"):
        value = tokenizer.get(key)
        declared.append(value.get("content") if isinstance(value, dict) else value)
    return NativeSpec(
        folder=folder, model_type=model_type, architectures=(ARCHITECTURES[model_type],),
        vocab_size=sizes["vocab_size"], hidden_size=sizes["hidden_size"],
        intermediate_size=sizes["intermediate_size"], layers=sizes["num_hidden_layers"], heads=heads,
        kv_heads=kv_heads, head_dim=head_dim, rms_norm_eps=float(eps), rope_theta=theta,
        max_position_embeddings=_int(config, "max_position_embeddings") or 2048,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=model_type == "qwen2", bos_token=bos if isinstance(bos, str) else None,
        model_max_length=max_length if isinstance(max_length, int) else None,
        declared_tokens=tuple(sorted({t for t in declared if isinstance(t, str) and t})))


class NativeTokenizer:
    """A checkpoint's tokenizer.json through `tokenizers`, answering what the causal backend asks of a
    transformers tokenizer: batch encoding without special tokens, the BOS id, the length limit."""

    def __init__(self, spec: NativeSpec) -> None:
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(str(spec.folder / "tokenizer.json"))
        except Exception as exc:
            raise NotNative(f"tokenizer.json: {exc}") from None
        # A tokenizer.json may carry padding or truncation settings; transformers turns both off for
        # a call that asks for neither, as every call here does.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        whole = {token.content for token in self._tokenizer.get_added_tokens_decoder().values()}
        lacking = [t for t in spec.declared_tokens if t not in whole]
        if lacking:
            raise NotNative(f"tokenizer.json lacks the declared token {lacking[0]!r}")
        self.bos_token_id = self._tokenizer.token_to_id(spec.bos_token) if spec.bos_token else None
        self.model_max_length = spec.model_max_length

    def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict[str, list[list[int]]]:
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encodings]}


@dataclass
class Output:
    """A forward's result, named as transformers names it. Logits of kept positions computed on the
    workspace (`base.Workspace`) live in its buffer: read them before the next forward."""

    logits: Any


def expected_shapes(spec: NativeSpec) -> dict[str, tuple[int, ...]]:
    """Every weight of the checkpoint by name and shape (a tied head has none of its own)."""
    hidden, inner = spec.hidden_size, spec.intermediate_size
    q, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (spec.vocab_size, hidden),
                                          "model.norm.weight": (hidden,)}
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (spec.vocab_size, hidden)
    for n in range(spec.layers):
        layer = f"model.layers.{n}."
        shapes.update({
            layer + "input_layernorm.weight": (hidden,), layer + "post_attention_layernorm.weight": (hidden,),
            layer + "self_attn.q_proj.weight": (q, hidden), layer + "self_attn.k_proj.weight": (kv, hidden),
            layer + "self_attn.v_proj.weight": (kv, hidden), layer + "self_attn.o_proj.weight": (hidden, q),
            layer + "mlp.gate_proj.weight": (inner, hidden), layer + "mlp.up_proj.weight": (inner, hidden),
            layer + "mlp.down_proj.weight": (hidden, inner)})
        if spec.qkv_bias:
            shapes.update({layer + "self_attn.q_proj.bias": (q,), layer + "self_attn.k_proj.bias": (kv,),
                           layer + "self_attn.v_proj.bias": (kv,)})
    return shapes


@functools.lru_cache(maxsize=None)
def _classes() -> Any:
    import torch
    import torch.nn.functional as F

    from . import packing
    from .cpu_linear import GATED_PARTS as GATED, _activate_in_place, _norm_class, _rotate
    from .cpu_linear import _classes as kernel_classes

    norm = _norm_class()  # x * rsqrt(mean(x^2) + eps) * weight, as Llama's RMSNorm computes it
    chunked_mlp = kernel_classes()[2]

    def parameter(tensor: torch.Tensor) -> torch.nn.Parameter:
        return torch.nn.Parameter(tensor, requires_grad=False)

    def linear(weights: Mapping[str, torch.Tensor], name: str) -> torch.nn.Linear:
        """An `nn.Linear` made from its checkpoint weights. Its constructor is skipped: it would fill
        random weights only to be replaced (0.3 s for a 135M model, and on the "meta" device 1.3 s of
        imports)."""
        layer = torch.nn.Linear.__new__(torch.nn.Linear)
        torch.nn.Module.__init__(layer)
        weight = weights[name + ".weight"]
        layer.out_features, layer.in_features = weight.shape
        layer.weight = parameter(weight)
        bias = weights.get(name + ".bias")
        layer.register_parameter("bias", parameter(bias) if bias is not None else None)
        return layer

    def rms_norm(spec: NativeSpec, weights: Mapping[str, torch.Tensor], name: str) -> Any:
        return norm(parameter(weights[name + ".weight"]), spec.rms_norm_eps)

    def plain_linear(layer: Any) -> bool:
        return (type(layer) is torch.nn.Linear and layer.weight.dtype == torch.float32
                and not layer._forward_hooks and not layer._forward_pre_hooks)

    def linear_into(x: torch.Tensor, layer: torch.nn.Linear, out: torch.Tensor) -> torch.Tensor:
        """`layer(x)` for 2-D x, written into `out`: the BLAS call `F.linear` makes, so the same bits."""
        if layer.bias is None:
            return torch.mm(x, layer.weight.t(), out=out)
        return torch.addmm(layer.bias, x, layer.weight.t(), out=out)

    class Attention(torch.nn.Module):
        is_causal = True  # read by `packing.attention`

        def __init__(self, spec: NativeSpec, config: Any, weights: Mapping[str, torch.Tensor], name: str) -> None:
            super().__init__()
            self.config, self.head_dim, self.scaling = config, spec.head_dim, spec.head_dim ** -0.5
            self.grouped = spec.heads != spec.kv_heads
            for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(self, part, linear(weights, f"{name}.{part}"))

        def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            rows, width, _ = x.shape
            q = self.q_proj(x).view(rows, width, -1, self.head_dim).transpose(1, 2)
            k = self.k_proj(x).view(rows, width, -1, self.head_dim).transpose(1, 2)
            v = self.v_proj(x).view(rows, width, -1, self.head_dim).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            if packing.running_segments() is not None:  # inside `packing.packed`, in this thread
                out, _ = packing.attention(self, q, k, v, None, scaling=self.scaling)
            else:  # right-padded rows: causal attention keeps the padding out of every real position
                out = F.scaled_dot_product_attention(q, k, v, is_causal=width > 1, scale=self.scaling,
                                                     enable_gqa=self.grouped).transpose(1, 2)
            return self.o_proj(out.reshape(rows, width, -1))

        def plain(self) -> bool:
            return all(plain_linear(getattr(self, part)) for part in ("q_proj", "k_proj", "v_proj", "o_proj"))

        def forward_into(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, work: Workspace,
                         shape: tuple[int, int], out: torch.Tensor) -> torch.Tensor:
            """`forward` on x [positions, hidden] of a [rows, width] input, every wide activation in
            `work`'s buffers and the output in `out`."""
            (rows, width), positions = shape, x.shape[0]
            q, k, v = (self.heads_into(x, name, layer, work, shape)
                       for name, layer in (("query", self.q_proj), ("key", self.k_proj), ("value", self.v_proj)))
            q = _rotate(q, cos, sin, out=work("rotated_query", *q.shape))
            k = _rotate(k, cos, sin, out=work("rotated_key", *k.shape))
            attended = work("attended", rows, width, q.shape[1], self.head_dim)
            if packing.running_segments() is not None:
                # The MLP's gate buffer is idle during attention (made by the first layer's MLP).
                packing.attention(self, q, k, v, None, scaling=self.scaling, out=attended,
                                  scratch=work.existing("gate"))
            else:
                attended.copy_(F.scaled_dot_product_attention(q, k, v, is_causal=width > 1, scale=self.scaling,
                                                              enable_gqa=self.grouped).transpose(1, 2))
            return linear_into(attended.view(positions, -1), self.o_proj, out)

        def heads_into(self, x: torch.Tensor, name: str, layer: torch.nn.Linear, work: Workspace,
                       shape: tuple[int, int]) -> torch.Tensor:
            """`layer(x)` for x [positions, hidden] in `work`'s buffer `name`, as heads [rows, heads, width, dim]."""
            flat = linear_into(x, layer, work(name, x.shape[0], layer.out_features))
            return flat.view(*shape, -1, self.head_dim).transpose(1, 2)

        def kept_into(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, work: Workspace,
                      shape: tuple[int, int], kept: list[int]) -> torch.Tensor:
            """`forward_into`'s output at the flat positions `kept` alone [len(kept), hidden]: keys and
            values for every position, the queries, attention and output projection for those only (in a
            last layer nothing reads the others). Each kept position attends to what it would in the
            whole pass: its row up to itself, or in a packed pass its prompt (shared start included)."""
            rows, width = shape
            k, v = (self.heads_into(x, name, layer, work, shape) for name, layer in (("key", self.k_proj),
                                                                                      ("value", self.v_proj)))
            k = _rotate(k, cos, sin, out=work("rotated_key", *k.shape))
            at = torch.tensor(kept)
            q = self.q_proj(x[at]).view(len(kept), -1, 1, self.head_dim)  # [kept, heads, 1, dim]
            flat_cos, flat_sin = (t.reshape(rows * width, 1, 1, -1)[at] for t in (cos, sin))
            q = _rotate(q, flat_cos, flat_sin)
            segments = packing.running_segments()
            attended = q.new_empty((len(kept), q.shape[1] * self.head_dim))
            for j, flat in enumerate(kept):
                row, position = divmod(flat, width)
                if segments is None:
                    keys, values = k[row:row + 1, :, :position + 1], v[row:row + 1, :, :position + 1]
                else:  # one packed row: the segment holding the position, after its shared start
                    start, _, shared_start, shared_end = next(seg for seg in segments if seg[0] <= position < seg[1])
                    keys, values = (torch.cat((t[:, :, shared_start:shared_end], t[:, :, start:position + 1]), dim=2)
                                    for t in (k, v))
                attended[j] = F.scaled_dot_product_attention(q[j:j + 1], keys, values, scale=self.scaling,
                                                             enable_gqa=self.grouped).reshape(-1)
            return self.o_proj(attended)

    def mlp_into(mlp: Any, x: torch.Tensor, work: Workspace, out: torch.Tensor) -> torch.Tensor:
        """A chunked gated MLP (`cpu_linear.ChunkedGatedMLP`) on x [positions, hidden], its two wide
        activations in `work`'s buffers and the output in `out`: the same steps, so the same bits."""
        inner, step = mlp.gate_proj.out_features, mlp.chunk
        for start in range(0, x.shape[0], step):
            part = x[start:start + step]
            gate = linear_into(part, mlp.gate_proj, work("gate", part.shape[0], inner))
            _activate_in_place(gate, mlp.activation).mul_(
                linear_into(part, mlp.up_proj, work("up", part.shape[0], inner)))
            linear_into(gate, mlp.down_proj, out[start:start + part.shape[0]])
        return out

    class MLP(torch.nn.Module):
        # Its activation under oneDNN's name (F.silu): the CPU kernels take it without probing each layer.
        gated_activation = ("swish", "")

        def __init__(self, weights: Mapping[str, torch.Tensor], name: str) -> None:
            super().__init__()
            for part in ("gate_proj", "up_proj", "down_proj"):
                setattr(self, part, linear(weights, f"{name}.{part}"))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class Layer(torch.nn.Module):
        def __init__(self, spec: NativeSpec, config: Any, weights: Mapping[str, torch.Tensor], name: str) -> None:
            super().__init__()
            self.self_attn = Attention(spec, config, weights, name + ".self_attn")
            self.mlp = MLP(weights, name + ".mlp")
            self.input_layernorm = rms_norm(spec, weights, name + ".input_layernorm")
            self.post_attention_layernorm = rms_norm(spec, weights, name + ".post_attention_layernorm")

        def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kept: Any = None) -> torch.Tensor:
            """The layer's output [rows, width, hidden], or with `kept` (flat position indices) its output
            at those positions alone [kept, hidden]: the MLP works position by position, so it runs on
            them only (the bulk of a last layer's work)."""
            # Each residual sum is written into the sublayer's fresh output (the same bits as h + out):
            # two activations fewer a layer. With a new tensor for each sum, glibc laid the same pass out
            # differently from one replay to the next, peaking 41-59 MB above the same base; now
            # 40.2-40.3 MB every time.
            h = self.self_attn(self.input_layernorm(h), cos, sin).add_(h)
            if kept is not None:
                h = h.reshape(-1, h.shape[-1])[kept]
            return self.mlp(self.post_attention_layernorm(h)).add_(h)

        def plain(self) -> bool:
            """Whether `forward_into` runs this layer: its norms, attention and MLP are this forward's
            own on plain linear layers (the CPU kernels' BLAS form, not packed for oneDNN)."""
            mlp = self.mlp
            return (type(self.input_layernorm) is norm and type(self.post_attention_layernorm) is norm
                    and self.self_attn.plain() and type(mlp) is chunked_mlp
                    and not (mlp._forward_hooks or mlp._forward_pre_hooks)
                    and all(plain_linear(getattr(mlp, part)) for part in GATED))

        def forward_into(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, work: Workspace,
                         shape: tuple[int, int], kept: Any = None) -> torch.Tensor:
            """`forward` on the residual stream `hidden` [positions, hidden], updated in place (h + out
            is out + h, bit for bit) and returned; with `kept`, the output at those positions alone."""
            size = hidden.shape
            out = work("sublayer", *size)
            normed = self.input_layernorm(hidden, out=work("normed", *size))
            if kept is not None:
                flat = kept.tolist()
                place = {f: j for j, f in enumerate(dict.fromkeys(flat))}  # a packed pass repeats one as filler
                unique = list(place)
                h = self.self_attn.kept_into(normed, cos, sin, work, shape, unique).add_(hidden[unique])
                h = self.mlp(self.post_attention_layernorm(h)).add_(h)
                return h if len(place) == len(flat) else h[[place[f] for f in flat]]
            hidden.add_(self.self_attn.forward_into(normed, cos, sin, work, shape, out))
            normed = self.post_attention_layernorm(hidden, out=work("normed", *size))
            return hidden.add_(mlp_into(self.mlp, normed, work, out))

    class Decoder(torch.nn.Module):
        def __init__(self, spec: NativeSpec, config: Any, weights: Mapping[str, torch.Tensor]) -> None:
            super().__init__()
            self.embed_tokens = torch.nn.Embedding(spec.vocab_size, spec.hidden_size,
                                                   _weight=weights["model.embed_tokens.weight"], _freeze=True)
            self.layers = torch.nn.ModuleList(Layer(spec, config, weights, f"model.layers.{n}")
                                              for n in range(spec.layers))
            self.norm = rms_norm(spec, weights, "model.norm")

    class NativeCausalLM(torch.nn.Module):
        """A Llama-family decoder under the checkpoint's own names (model.layers.N.self_attn.q_proj, ...)."""

        native = True  # `packing.packed` registers no transformers attention function for it

        def __init__(self, spec: NativeSpec, weights: Mapping[str, torch.Tensor]) -> None:
            super().__init__()
            # What the backend reads from a transformers config; the attention implementation is
            # switched by `packing.packed` for the length of a packed pass.
            self.config = _RunConfig(spec)
            self.spec = spec
            self.model = Decoder(spec, self.config, weights)
            if spec.tie_word_embeddings:
                self.lm_head = linear({"lm_head.weight": self.model.embed_tokens.weight}, "lm_head")
            else:
                self.lm_head = linear(weights, "lm_head")
            steps = torch.arange(0, spec.head_dim, 2, dtype=torch.int64).float()
            self.register_buffer("inv_freq", 1.0 / (spec.rope_theta ** (steps / spec.head_dim)), persistent=False)
            # Kept from pass to pass where the layers run on the BLAS (see base.Workspace).
            self.workspace = Workspace()

        def get_input_embeddings(self) -> Any:
            return self.model.embed_tokens

        def get_output_embeddings(self) -> Any:
            return self.lm_head

        def get_decoder(self) -> Any:
            return self.model

        def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """cos and sin [rows, 1, width, head_dim] of each position (Llama's default rotary embedding)."""
            freqs = (self.inv_freq[None, :, None].expand(positions.shape[0], -1, 1)
                     @ positions[:, None, :].float()).transpose(1, 2)
            angles = torch.cat((freqs, freqs), dim=-1)
            return angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)

        def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                    logits_to_keep: int = 0, use_cache: bool = False, past_key_values: Any = None,
                    attention_mask: Any = None, keep: torch.Tensor | None = None,
                    workspace: Workspace | None = None) -> Output:
            """Logits [rows, width, vocab], or [rows, k, vocab] at the positions `keep` [rows, k] of each
            row (their last layer's MLP and the vocabulary projection run on those alone). `workspace`:
            the buffers the pass writes into, when not the model's own (a thread running passes beside
            another has its own set)."""
            if use_cache or past_key_values is not None or attention_mask is not None:
                raise NotImplementedError("the native forward runs whole rows without a cache or a padding mask")
            rows, width = input_ids.shape
            if position_ids is None:
                position_ids = torch.arange(width, device=input_ids.device).expand(rows, width)
            kept = None
            if keep is not None:
                kept = (keep + torch.arange(rows, device=keep.device).unsqueeze(1) * width).reshape(-1)
            cos, sin = self.rotary(position_ids)
            *layers, last = self.model.layers
            on_workspace = self._on_workspace()
            if on_workspace:
                work, size = workspace or self.workspace, (rows * width, self.spec.hidden_size)
                hidden = torch.index_select(self.model.embed_tokens.weight, 0, input_ids.reshape(-1),
                                            out=work("hidden", *size))
                for layer in layers:
                    layer.forward_into(hidden, cos, sin, work, (rows, width))
                h = last.forward_into(hidden, cos, sin, work, (rows, width), kept)
                h = self.model.norm(h, out=work("normed", *h.shape))
            else:
                h = self.model.embed_tokens(input_ids)
                for layer in layers:
                    h = layer(h, cos, sin)
                h = self.model.norm(last(h, cos, sin, kept))
            if kept is not None:
                if on_workspace and plain_linear(self.lm_head):  # the logits too
                    logits = linear_into(h, self.lm_head, work("logits", h.shape[0], self.lm_head.out_features))
                    return Output(logits.view(rows, -1, logits.shape[-1]))
                return Output(self.lm_head(h.view(rows, -1, h.shape[-1])))
            h = h.view(rows, width, -1)
            if logits_to_keep:
                h = h[:, -logits_to_keep:]
            return Output(self.lm_head(h))

        def _on_workspace(self) -> bool:
            return all(layer.plain() for layer in self.model.layers) and type(self.model.norm) is norm

    return NativeCausalLM


class _RunConfig:
    """The config attributes the causal backend and `packing` read from a model."""

    def __init__(self, spec: NativeSpec) -> None:
        self.model_type = spec.model_type
        self.max_position_embeddings = spec.max_position_embeddings
        self.sliding_window = None
        self._attn_implementation = "sdpa"


def load_native(spec: NativeSpec) -> tuple[Any, NativeTokenizer]:
    """The model (float32, CPU, eval mode) and tokenizer of a checkpoint; NotNative when its weights do
    not match its config."""
    from safetensors import safe_open

    tokenizer = NativeTokenizer(spec)
    expected = expected_shapes(spec)
    weights: dict[str, Any] = {}
    try:
        for path in sorted(spec.folder.glob("*.safetensors")):
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():
                    if name in weights:
                        raise NotNative(f"{name} is in two weight files")
                    if name not in expected:
                        if spec.tie_word_embeddings and name == "lm_head.weight":
                            continue  # a tied head saved as well: the embedding is the same tensor
                        raise NotNative(f"weight {name} is not in the {spec.model_type} layout")
                    weights[name] = f.get_tensor(name)
    except NotNative:
        raise
    except Exception as exc:  # an unreadable or damaged file
        raise NotNative(f"cannot read the weights: {exc}") from None
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise NotNative(f"weights missing: {', '.join(missing[:3])}")
    import torch

    for name, tensor in weights.items():
        if tuple(tensor.shape) != expected[name]:
            raise NotNative(f"weight {name} has shape {tuple(tensor.shape)}, not {expected[name]}")
        if tensor.dtype != torch.float32:
            weights[name] = tensor.float()
    model = _classes()(spec, weights)
    model.eval()
    return model, tokenizer
