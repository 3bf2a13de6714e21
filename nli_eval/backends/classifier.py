"""NLI classifier heads (roberta-large-mnli, deberta-mnli, bart-large-mnli): premise and hypothesis in.

The head's `id2label` is mapped to labels by name, never by position: `roberta-large-mnli` predicts
0 CONTRADICTION, 1 NEUTRAL, 2 ENTAILMENT while ANLI counts 0 entailment. Generic names (LABEL_0)
need an explicit --label-map.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import ModelError
from ..labels import Label, parse_label_name
from ..modeling import LoadOptions, ModelRef, ParamCount, count_loaded, load_weights
from ..types import Prompt
from .base import BackendInfo, BatchCallback, release_memory, without_word_cache


def map_head_labels(id2label: Mapping[Any, str], label_map: Mapping[str, Label] | None, model: str) -> dict[int, Label]:
    """Head index -> Label, by the head's label names or the user's --label-map (names or indices)."""
    mapping: dict[int, Label] = {}
    for raw_index, name in id2label.items():
        index = int(raw_index)
        label = None
        if label_map:
            label = label_map.get(str(name)) or label_map.get(str(index))
        if label is None:
            label = parse_label_name(str(name))
        if label is None:
            names = ", ".join(str(n) for n in id2label.values())
            raise ModelError(f"model {model} has label names ({names}) that are not NLI labels; "
                             "pass --label-map NAME=entailment,NAME=neutral,NAME=contradiction")
        mapping[index] = label
    labels = set(mapping.values())
    if len(labels) != len(mapping):
        raise ModelError(f"model {model}: two head outputs map to the same label ({mapping}); fix --label-map")
    if labels not in ({Label.ENTAILMENT, Label.NEUTRAL, Label.CONTRADICTION}, {Label.ENTAILMENT, Label.NON_ENTAILMENT}):
        raise ModelError(f"model {model}: head labels {sorted(l.value for l in labels)} are neither three-way "
                         "(entailment, neutral, contradiction) nor two-way (entailment, non_entailment)")
    return mapping


class ClassifierBackend:
    def __init__(self, model: Any, tokenizer: Any, labels: Mapping[int, Label], *, name: str,
                 batch_size: int | str = "auto", max_length: int | None = None, dtype: str = "",
                 params: ParamCount | None = None) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = without_word_cache(tokenizer)
        self.labels = dict(labels)
        self.device = next(model.parameters()).device
        limit = max_length or getattr(tokenizer, "model_max_length", 512)
        self.max_length = limit if isinstance(limit, int) and 0 < limit < 100_000 else 512
        self.batch_size = batch_size if isinstance(batch_size, int) else 32
        self.info = BackendInfo(kind="classifier", model=name, dtype=dtype or str(next(model.parameters()).dtype),
                                device=str(self.device), max_length=self.max_length,
                                params_total=params.total if params else None,
                                params_non_embedding=params.non_embedding if params else None,
                                extra={"labels": ",".join(f"{i}={l.value}" for i, l in sorted(self.labels.items()))})

    @property
    def label_space_labels(self) -> set[Label]:
        return set(self.labels.values())

    def fits(self, prompt: Prompt) -> bool:
        # The premise is cut from the end by the tokenizer when too long; count that as a cut prompt.
        ex = prompt.example
        n = len(self.tokenizer(ex.premise, ex.hypothesis)["input_ids"])
        return n <= self.max_length

    def score(self, prompts: Sequence[Prompt], on_batch: BatchCallback | None = None) -> list[dict[Label, float]]:
        torch = self.torch
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i].example.premise))
        out: list[dict[Label, float] | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = [prompts[i].example for i in idx]
            enc = self.tokenizer([e.premise for e in batch], [e.hypothesis for e in batch], padding=True,
                                 truncation="only_first", max_length=self.max_length, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.inference_mode():
                logp = torch.log_softmax(self.model(**enc).logits.float(), dim=-1)
            scores = [{self.labels[j]: float(logp[r, j]) for j in self.labels} for r in range(len(idx))]
            for i, s in zip(idx, scores):
                out[i] = s
            if on_batch is not None:
                on_batch([prompts[i] for i in idx], scores)
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None
        release_memory(self.device)


def load_classifier(ref: ModelRef, load: LoadOptions, options: Any, config: Any, tokenizer: Any, device: str,
                    params: ParamCount | None) -> tuple[ClassifierBackend, ParamCount]:
    from transformers import AutoModelForSequenceClassification

    labels = map_head_labels(getattr(config, "id2label", None) or {}, options.label_map, ref.label)
    model = load_weights(AutoModelForSequenceClassification, ref, load, device)
    counted = params or count_loaded(model)
    backend = ClassifierBackend(model, tokenizer, labels, name=ref.label, batch_size=options.batch_size,
                                max_length=options.max_length, dtype=load.dtype, params=counted)
    return backend, counted
