"""Builders for offline test inputs: tiny random checkpoints and NLI fixture files in real layouts."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

# What the reliability suite generated and injected, printed at the end of the session (conftest).
COUNTS: Counter[str] = Counter()

SPECIAL = ["<unk>", "<s>", "</s>"]
WORDS = ("the a an cat dog bird man woman child teacher doctor farmer artist singer river house car "
         "park city garden book table window door sat ran walked saw liked helped called near under "
         "behind beside over red blue green small large old young happy tired quickly slowly "
         "not never always some all no one two three four five is was are were has had did does "
         "True False Neither Question Answer Maybe Yes entailment neutral contradiction").split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
        lines.append(" ".join(words) + rng.choice([".", "?", "!", ":"]))
    lines.append("Question: True, False, or Neither?\nAnswer: True\n\nAnswer: False Answer: Neither")
    return lines


def build_tokenizer(path: Path, pad: bool = True, added: tuple[str, ...] = ()):
    """A byte-level BPE tokenizer trained here on the project's own words, saved like a Hub one;
    `added` strings become tokens of their own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.add_tokens(list(added))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>" if pad else None)
    fast.save_pretrained(path)
    return fast


def build_causal(path: Path, shape: str = "llama", seed: int = 0, max_positions: int = 512,
                 pad: bool = True, added: tuple[str, ...] = ()) -> Path:
    """A tiny random causal LM (Llama-, Qwen2-, Gemma-3- or GPT-2-shaped) saved with save_pretrained (safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPT2Config, LlamaConfig

    path = Path(path)
    tok = build_tokenizer(path, pad=pad, added=added)
    vocab = len(tok)
    torch.manual_seed(seed)
    if shape == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                             bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    elif shape == "gemma":  # tanh-GELU MLP, tied embeddings, a 16-token sliding window on layer 1
        config = Gemma3TextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=16,
                                  layer_types=["sliding_attention", "full_attention"],
                                  max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2,
                                  pad_token_id=0, tie_word_embeddings=True)
    elif shape == "qwen2":  # biases on the query, key and value projections; tied embeddings
        from transformers import Qwen2Config
        config = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=max_positions,
                             bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    elif shape == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=max_positions,
                            bos_token_id=1, eos_token_id=2)
    else:
        raise ValueError(shape)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger weights so label words get clearly different scores
        for p in model.parameters():
            p.mul_(8.0) if p.dim() > 1 else None
    model.save_pretrained(path)
    return path


def nli_rows(n: int, seed: int = 0, prefix: str = "ex") -> list[dict]:
    """Synthetic NLI rows written by the project (no third-party text), balanced over three labels."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        subj, obj = rng.choice(WORDS[2:16]), rng.choice(WORDS[16:28])
        premise = f"The {subj} {rng.choice(['sat', 'ran', 'walked'])} near the {obj} " + " ".join(
            rng.choice(WORDS) for _ in range(rng.randint(2, 20))) + "."
        hypothesis = f"The {subj} was {rng.choice(['happy', 'tired', 'old', 'young'])}."
        rows.append({"uid": f"{prefix}-{i:04d}", "premise": premise, "hypothesis": hypothesis,
                     "label": i % 3, "reason": ""})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_anli_hub(root: Path, n: int = 30, rounds=(1, 2, 3), splits=("dev", "test")) -> Path:
    """ANLI in the Hub layout: ROOT/anli/<split>_r<N>.jsonl with uid, premise, hypothesis, label 0/1/2."""
    for r in rounds:
        for split in splits:
            write_jsonl(root / "anli" / f"{split}_r{r}.jsonl", nli_rows(n, seed=r * 10 + len(split), prefix=f"{split}{r}"))
    return root


def write_anli_release(root: Path, n: int = 30, rounds=(1, 2, 3)) -> Path:
    """ANLI in the v1.0 release layout: ROOT/anli-v1.0/R<N>/dev.jsonl with context and e/n/c labels."""
    for r in rounds:
        rows = [{"uid": row["uid"], "context": row["premise"], "hypothesis": row["hypothesis"],
                 "label": "enc"[row["label"]], "model_label": "n", "emturk": False, "genre": "wiki",
                 "reason": "", "tag": ""} for row in nli_rows(n, seed=r * 10 + 3, prefix=f"R{r}")]
        write_jsonl(root / "anli-v1.0" / f"R{r}" / "dev.jsonl", rows)
    return root


def build_classifier(path: Path, id2label: dict[int, str], favour: int | None = None, seed: int = 0) -> Path:
    """A tiny random BERT NLI head; `favour` biases one output so it always wins."""
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig

    path = Path(path)
    tok = build_tokenizer(path)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=512, num_labels=len(id2label),
                        id2label=dict(id2label), label2id={v: k for k, v in id2label.items()}, pad_token_id=2)
    model = AutoModelForSequenceClassification.from_config(config)
    if favour is not None:
        with torch.no_grad():
            model.classifier.bias.zero_()
            model.classifier.bias[favour] = 50.0
    model.save_pretrained(path)
    return path


def build_seq2seq(path: Path, seed: int = 0) -> Path:
    """A tiny random T5-shaped encoder-decoder."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, T5Config

    path = Path(path)
    tok = build_tokenizer(path)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, pad_token_id=2, eos_token_id=2, decoder_start_token_id=2)
    AutoModelForSeq2SeqLM.from_config(config).save_pretrained(path)
    return path
