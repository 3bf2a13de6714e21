"""A few-shot prefix's keys and values shared by every row of a batch, without a copy per row.

Copying the prefix cache to each of a batch's rows costs rows x the prefix's keys and values: for
16 rows after a 5-shot ANLI prefix (about 650 tokens) that is 480 MB with SmolLM2-135M, all of it
alive until the batch is scored. Here each full-attention layer keeps the prefix once and the rows'
own keys and values beside it; a layer's attention sees the two joined for that layer's pass only.
"""

from __future__ import annotations

import copy
import functools
from typing import Any


def batch_cache(prefix_cache: Any, rows: int, keep: bool) -> Any:
    """A cache for a batch of `rows` prompts that all continue `prefix_cache` (which is left as it is).

    `keep`: whether the rows' own keys and values are kept after the pass (a multi-token label word
    continues from them). Layers of another kind than the plain dynamic one (sliding windows, for
    one) are copied per row.
    """
    shared = _shared_layer_class()
    layers = getattr(prefix_cache, "layers", None)
    if shared is None or not isinstance(layers, list):
        return _copied(prefix_cache, rows)
    plain = shared.__base__  # DynamicLayer: full attention, grown by concatenation
    cache = copy.copy(prefix_cache)
    cache.layers = [shared(layer, keep) if type(layer) is plain and layer.is_initialized
                    else _copied(layer, rows) for layer in layers]
    return cache


def _copied(cache: Any, rows: int) -> Any:
    """`cache` (a whole cache or one layer) deep-copied with its one row repeated `rows` times."""
    import torch

    cache = copy.deepcopy(cache)
    # A layer's rows are picked on its own device (with --device-map the layers sit on several GPUs);
    # a whole cache has no one device, and indices on the CPU index a tensor on any device.
    device = getattr(cache, "device", None)
    cache.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=device))
    return cache


@functools.lru_cache(maxsize=None)
def _shared_layer_class() -> Any:
    """The shared-prefix layer, a `DynamicLayer` subclass; None where transformers has no cache layers."""
    try:
        import torch
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class SharedPrefixLayer(DynamicLayer):
        """The prefix's keys and values once ([1, heads, prefix, dim]), the rows' own after them."""

        def __init__(self, layer: Any, keep: bool) -> None:
            super().__init__()
            self.dtype, self.device = layer.keys.dtype, layer.keys.device
            self.prefix_keys, self.prefix_values = layer.keys, layer.values
            self.keep = keep
            self.is_initialized = True

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            own_keys = key_states if self.keys is None else torch.cat([self.keys, key_states], dim=-2)
            own_values = value_states if self.values is None else torch.cat([self.values, value_states], dim=-2)
            if self.keep:
                self.keys, self.values = own_keys, own_values
            return self._joined(self.prefix_keys, own_keys), self._joined(self.prefix_values, own_values)

        def _joined(self, prefix: Any, own: Any) -> Any:
            # A view of the prefix with a batch stride of 0: the rows read the same memory.
            return torch.cat([prefix.expand(own.shape[0], *prefix.shape[1:]), own], dim=-2)

        def get_seq_length(self) -> int:
            return self.prefix_keys.shape[-2] + (0 if self.keys is None else self.keys.shape[-2])

        def batch_select_indices(self, indices: Any) -> None:
            if self.keys is not None:
                self.keys, self.values = self.keys[indices, ...], self.values[indices, ...]

        def reset(self) -> None:
            self.keys = self.values = None

        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("a shared-prefix cache is scored once and not cropped")

        def batch_repeat_interleave(self, repeats: int) -> None:
            raise NotImplementedError("a shared-prefix cache is scored once and not repeated")

    return SharedPrefixLayer
