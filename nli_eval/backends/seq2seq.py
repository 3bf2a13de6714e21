"""Encoder-decoder models (T5, Flan-T5): label words scored by decoder log-likelihood.

The encoder reads the prompt once; every label word is decoded against that one encoding.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import ModelError
from ..labels import Label
from ..modeling import LoadOptions, ModelRef, ParamCount, count_loaded, load_weights
from ..types import Prompt
from .base import BackendInfo, BatchCallback, release_memory, without_word_cache


class Seq2SeqBackend:
    def __init__(self, model: Any, tokenizer: Any, *, name: str, batch_size: int | str = "auto",
                 max_length: int | None = None, dtype: str = "", params: ParamCount | None = None) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = without_word_cache(tokenizer)
        self.device = next(model.parameters()).device
        limit = max_length or getattr(model.config, "n_positions", None) or getattr(tokenizer, "model_max_length", 512)
        self.max_length = limit if isinstance(limit, int) and 0 < limit < 100_000 else 512
        self.batch_size = batch_size if isinstance(batch_size, int) else 16
        start = getattr(model.config, "decoder_start_token_id", None)
        if start is None:
            raise ModelError(f"model {name} has no decoder_start_token_id in its config")
        self.start = int(start)
        self.pad = int(getattr(model.config, "pad_token_id", None) or 0)
        self.info = BackendInfo(kind="seq2seq", model=name, dtype=dtype or str(next(model.parameters()).dtype),
                                device=str(self.device), max_length=self.max_length,
                                params_total=params.total if params else None,
                                params_non_embedding=params.non_embedding if params else None)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def fits(self, prompt: Prompt) -> bool:
        return len(self._ids(prompt.context)) <= self.max_length

    def _option_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
        if not ids:
            raise ModelError(f"label word {text!r} encodes to no tokens")
        return ids

    def score(self, prompts: Sequence[Prompt], on_batch: BatchCallback | None = None) -> list[dict[Label, float]]:
        torch = self.torch
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i].context))
        out: list[dict[Label, float] | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = [prompts[i] for i in idx]
            enc = self.tokenizer([p.context for p in batch], padding=True, return_tensors="pt").to(self.device)
            items = [(r, label, self._option_ids(text)) for r, p in enumerate(batch) for label, text in p.options.items()]
            width = max(len(t) for _, _, t in items)
            dec = torch.full((len(items), width), self.pad, dtype=torch.long)
            for k, (_, _, toks) in enumerate(items):  # teacher forcing: start token, then the word
                dec[k, 0] = self.start
                dec[k, 1:len(toks)] = torch.tensor(toks[:-1])
            rows = torch.tensor([r for r, _, _ in items], device=self.device)
            with torch.inference_mode():
                encoded = self.model.get_encoder()(**enc)
                hidden = encoded.last_hidden_state[rows]
                logits = self.model(encoder_outputs=(hidden,), attention_mask=enc["attention_mask"][rows],
                                    decoder_input_ids=dec.to(self.device)).logits
                logp = torch.log_softmax(logits.float(), dim=-1)
            scores: list[dict[Label, float]] = [{} for _ in batch]
            for k, (r, label, toks) in enumerate(items):
                target = torch.tensor(toks, device=self.device)
                scores[r][label] = float(logp[k, : len(toks)].gather(-1, target.unsqueeze(-1)).sum())
            for i, s in zip(idx, scores):
                out[i] = s
            if on_batch is not None:
                on_batch(batch, scores)
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None
        release_memory(self.device)


def load_seq2seq(ref: ModelRef, load: LoadOptions, options: Any, tokenizer: Any, device: str,
                 params: ParamCount | None) -> tuple[Seq2SeqBackend, ParamCount]:
    from transformers import AutoModelForSeq2SeqLM

    model = load_weights(AutoModelForSeq2SeqLM, ref, load, device)
    counted = params or count_loaded(model)
    return Seq2SeqBackend(model, tokenizer, name=ref.label, batch_size=options.batch_size,
                          max_length=options.max_length, dtype=load.dtype, params=counted), counted
