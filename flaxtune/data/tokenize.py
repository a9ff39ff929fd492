"""GPT-2 tokenizer loading and one-pass tokenization of a whole data set.

Texts are encoded exactly as the Hugging Face tokenizer encodes them with
``add_special_tokens=False`` (byte-level BPE: any Unicode text, emoji included,
round-trips exactly). A literal ``<|endoftext|>`` inside a text is *not* spelled
out: like ``AutoTokenizer.from_pretrained("gpt2")``, the tokenizer maps it to
the special token id 50256 (which is also the pad id when the tokenizer has no
pad token). That is harmless here: which positions are real tokens comes from
the tokenizer's attention mask and the per-text lengths, never from
``ids == pad_token_id``, and the classifier pools the last real token
(:func:`flaxtune.model.last_token_index` reads the mask).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from flaxtune.data.readers import DataError

log = logging.getLogger(__name__)


class TokenizationError(DataError):
    """A text cannot be turned into token ids the model accepts (a :class:`DataError`)."""


def load_tokenizer(name_or_path: str):
    """A GPT-2 tokenizer from a hub id or local folder; eos doubles as pad when none is set."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as e:
        hint = "" if Path(name_or_path).is_dir() else (
            " (offline? pass a local tokenizer folder, e.g. --config.tokenizer=../shared/tokenizers/gpt2)")
        raise TokenizationError(f"could not load tokenizer {name_or_path!r}: {e}{hint}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@dataclasses.dataclass
class Tokenized:
    """Token ids of a data set, flat with offsets (cheap to cache and to slice)."""

    ids: list[np.ndarray]          # one int32 array per example, 1 <= len <= max_length
    labels: np.ndarray | None      # int32 class ids, or None for unlabelled texts
    num_truncated: int = 0

    def __len__(self):
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int32, count=len(self.ids))


def tokenize_texts(tokenizer, texts: list[str], max_length: int, *, vocab_size: int,
                   labels: np.ndarray | None = None, sources: list[str] | None = None) -> Tokenized:
    """Tokenizes every text once, truncating to `max_length` tokens.

    Raises if a text yields no tokens or a token id does not fit the model's
    embedding table (JAX would silently return garbage for it).
    """
    ids, truncated = [], 0
    chunk = 4096
    for start in range(0, len(texts), chunk):
        # verbose=False: transformers would warn that a text longer than the tokenizer's
        # model_max_length "will result in indexing errors"; it is truncated below and counted.
        enc = tokenizer(list(texts[start:start + chunk]), add_special_tokens=False,
                        truncation=False, return_attention_mask=True, verbose=False)
        for j, (row, mask) in enumerate(zip(enc["input_ids"], enc["attention_mask"])):
            n = int(sum(mask))  # real tokens, as the tokenizer marks them
            i = start + j
            where = sources[i] if sources else f"text #{i + 1}"
            if n == 0:
                raise TokenizationError(f"{where}: text {texts[i]!r} gives no tokens")
            if n > max_length:
                truncated += 1
                n = max_length
            arr = np.asarray(row[:n], dtype=np.int32)
            if arr.max() >= vocab_size or arr.min() < 0:
                bad = int(arr.max() if arr.max() >= vocab_size else arr.min())
                try:
                    token = f": it is the token {tokenizer.convert_ids_to_tokens(bad)!r}"
                except Exception:  # noqa: BLE001 - only for the message
                    token = ""
                raise TokenizationError(
                    f"{where}: token id {bad} is outside the model's embedding table "
                    f"(vocab_size={vocab_size}, ids 0..{vocab_size - 1}){token}; the tokenizer "
                    f"({len(tokenizer)} tokens) does not match the model — use the model's own tokenizer, "
                    "without added tokens")
            ids.append(arr)
    if truncated:
        log.info("truncated %d of %d texts to max_length=%d tokens", truncated, len(texts), max_length)
    return Tokenized(ids=ids, labels=labels, num_truncated=truncated)
