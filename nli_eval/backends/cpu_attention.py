"""Attention for grouped-query models on a CPU: short sequences run with their key/value heads repeated.

transformers' SDPA path hands grouped key/value heads to torch with `enable_gqa=True` whenever no mask
is needed. On a CPU, torch's kernel for that is slower than repeating the heads first on prompts of a
few hundred tokens (about 25% at 150 tokens), and faster on long ones. This registers an attention
function that repeats the heads for short unmasked self-attention and leaves every other call to
transformers' own SDPA function, under its own name so that no other model in the process changes.
"""

from __future__ import annotations

from typing import Any

NAME = "nli_eval_cpu_sdpa"
SHORT = 384  # tokens; above this torch's grouped kernel is the faster one


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
               scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    plain = (attention_mask is None and groups > 1 and query.device.type == "cpu" and dropout == 0.0
             and 1 < query.shape[2] == key.shape[2] <= SHORT and key.shape[1] * groups == query.shape[1]
             and not any(kwargs.get(name) is not None for name in ("softcap", "position_bias", "cache"))
             and not kwargs.get("output_attentions"))
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, repeat_kv(key, groups), repeat_kv(value, groups), scale=scaling, is_causal=bool(causal))
    return out.transpose(1, 2).contiguous(), None


def use_for(model: Any) -> bool:
    """Switch a model that runs transformers' SDPA attention to this function; whether it was switched."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:  # an older transformers without attention registries
        return False
    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks are exactly SDPA's
    config._attn_implementation = NAME
    return True
