"""Pick and build the backend for a model: causal LM, NLI classifier head, or seq2seq."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ModelError
from ..labels import Label
from ..modeling import (LoadOptions, ModelRef, count_from_headers, count_loaded, load_config,
                        load_tokenizer, load_weights, loading_bars_off, resolve_device)

BACKENDS = ("auto", "causal", "classifier", "seq2seq")


@dataclass(frozen=True)
class BackendOptions:
    kind: str = "auto"
    batch_size: int | str = "auto"
    max_length: int | None = None
    add_bos: bool | None = None
    label_map: Mapping[str, Label] | None = None  # classifier: model label name -> Label
    # A plain Llama or Qwen2 checkpoint in float32 on a CPU runs nli-eval's own forward (native.py)
    # unless this is off.
    native: bool = True


def detect_kind(config: Any) -> str:
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "ForSequenceClassification" in archs:
        return "classifier"
    if getattr(config, "is_encoder_decoder", False) or "ForConditionalGeneration" in archs and "T5" in archs:
        return "seq2seq"
    return "causal"


def native_spec_for(ref: ModelRef, load: LoadOptions, options: BackendOptions, device: str) -> Any:
    """The checkpoint's spec when nli-eval's own forward runs it (see native.py), else None."""
    if not options.native:
        return None
    from .native import native_spec
    return native_spec(ref, load, options.kind, options.add_bos, device)


def load_backend(ref: ModelRef, load: LoadOptions, options: BackendOptions, device: str | None = None,
                 config: Any = None, kind: str | None = None, quiet: bool = False) -> Any:
    """The backend and its parameter count; `config` and `kind` when the caller has read them already
    (a `native.NativeSpec` as the config runs the native forward). `quiet`: no loading bars."""
    if options.kind not in BACKENDS:
        raise ModelError(f"unknown backend {options.kind!r}; choose one of: {', '.join(BACKENDS)}")
    from .native import NativeSpec, NotNative
    if isinstance(config, NativeSpec):
        try:
            return _native_backend(config, ref, load, options, quiet)
        except NotNative:  # the files do not match the config: transformers reads them its own way
            with loading_bars_off() if quiet else nullcontext():
                return load_backend(ref, load, options, device, kind=kind)
    config = config if config is not None else load_config(ref, load)
    kind = kind or (detect_kind(config) if options.kind == "auto" else options.kind)
    device = device or resolve_device(load.device)
    tokenizer = load_tokenizer(ref, load)
    params = count_from_headers(ref)
    if kind == "causal":
        from transformers import AutoModelForCausalLM

        from .causal import CausalLMBackend
        model = load_weights(AutoModelForCausalLM, ref, load, device)
        counted = params or count_loaded(model)
        return CausalLMBackend(model, tokenizer, name=ref.label, batch_size=options.batch_size,
                               max_length=options.max_length, add_bos=options.add_bos, dtype=load.dtype,
                               params=(counted.total, counted.non_embedding)), counted
    if kind == "classifier":
        from .classifier import load_classifier
        return load_classifier(ref, load, options, config, tokenizer, device, params)
    if kind == "seq2seq":
        from .seq2seq import load_seq2seq
        return load_seq2seq(ref, load, options, tokenizer, device, params)
    raise ModelError(f"backend {kind} is not available")  # pragma: no cover


def _native_backend(spec: Any, ref: ModelRef, load: LoadOptions, options: BackendOptions, quiet: bool) -> Any:
    from .causal import CausalLMBackend
    from .native import load_native

    model, tokenizer = load_native(spec)

    def through_transformers() -> Any:
        """The same checkpoint loaded by transformers, for prompts that need a key/value cache."""
        from transformers import AutoModelForCausalLM

        with loading_bars_off() if quiet else nullcontext():
            return load_weights(AutoModelForCausalLM, ref, load, "cpu")

    counted = count_from_headers(ref) or count_loaded(model)
    return CausalLMBackend(model, tokenizer, name=ref.label, batch_size=options.batch_size,
                           max_length=options.max_length, add_bos=options.add_bos, dtype=load.dtype,
                           params=(counted.total, counted.non_embedding),
                           transformers_model=through_transformers), counted
