"""Tokenizers for the two models, built offline from the packaged files with the
``tokenizers`` library (no ``transformers`` needed).

* :func:`minilm_tokenizer` -- all-MiniLM-L6-v2's WordPiece ``tokenizer.json``,
  used the way sentence-transformers uses it: each text is stripped of leading
  and trailing whitespace, ``[CLS] ... [SEP]`` added, truncated to
  ``max_seq_length`` (256, from ``sentence_bert_config.json``; the file's own
  128-token truncation and fixed padding are switched off) and a batch padded
  with ``[PAD]`` (id 0) to its longest member.
* :func:`smollm2_tokenizer` -- SmolLM2's byte-level BPE, rebuilt from the GGUF
  metadata (``tokenizer.ggml.tokens``/``merges``/``token_type``) with the
  pre-tokenizer ``tokenizer.ggml.pre`` names: for ``"smollm"`` digits are split
  one by one, then the GPT-2 byte-level regex applies (llama.cpp's
  ``LLAMA_VOCAB_PRE_TYPE_SMOLLM``; the same as the Hugging Face
  ``tokenizer.json`` of SmolLM2). Control tokens (``<|im_start|>``,
  ``<|im_end|>``, ``<|endoftext|>``, ...) are matched whole as special tokens.
  No BOS is added (``tokenizer.ggml.add_bos_token`` is false).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from refute.compute.weights import gguf_file, minilm_dir, smollm2_gguf_path

__all__ = ["MiniLMTokenizer", "SmolLM2Tokenizer", "minilm_tokenizer", "smollm2_tokenizer"]


class MiniLMTokenizer:
    """WordPiece tokenizer for all-MiniLM-L6-v2 (sentence-transformers semantics)."""

    def __init__(self, model_dir: str | Path | None = None, max_length: int | None = None):
        model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
        if max_length is None:
            max_length = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.max_length = int(max_length)
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(self.max_length, strategy="longest_first")
        self.tokenizer = tok
        self.pad_id = tok.token_to_id("[PAD]")
        self.cls_id = tok.token_to_id("[CLS]")
        self.sep_id = tok.token_to_id("[SEP]")
        self.unk_id = tok.token_to_id("[UNK]")
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """One text's ids: ``[CLS] wordpieces [SEP]``, at most ``max_length`` of them."""
        return self.tokenizer.encode(text.strip()).ids

    def encode_batch(self, texts: Sequence[str], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, both int64 ``[len(texts), L]``, right-padded with
        ``[PAD]`` (mask 0) to the longest text (or to ``pad_to`` if larger)."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of strings")
        rows = [e.ids for e in self.tokenizer.encode_batch([t.strip() for t in texts])]
        width = max([len(r) for r in rows] + [pad_to or 0, 1])
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(rows), width), dtype=torch.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
            mask[i, : len(r)] = 1
        return ids, mask

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)


# tokenizer.ggml.pre -> pre-tokenizer; llama.cpp's llama-vocab.cpp lists which
# regexes each name means. "smollm" (like "starcoder", "refact") is \p{N} split
# alone, then the GPT-2 regex.
def _pre_tokenizer(pre: str):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in ("smollm", "starcoder", "refact", "codeshell"):
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in ("gpt-2", "gpt2", "default"):
        return byte_level
    raise NotImplementedError(f"GGUF pre-tokenizer {pre!r} is not supported")


_TOKEN_NORMAL, _TOKEN_CONTROL, _TOKEN_USER_DEFINED = 1, 3, 4


class SmolLM2Tokenizer:
    """Byte-level BPE tokenizer rebuilt from a GGUF file's ``tokenizer.ggml.*`` metadata."""

    def __init__(self, metadata: Mapping[str, object]):
        md = metadata
        if md.get("tokenizer.ggml.model") != "gpt2":
            raise NotImplementedError(f"GGUF tokenizer model {md.get('tokenizer.ggml.model')!r} is not supported")
        tokens: list[str] = list(md["tokenizer.ggml.tokens"])
        types: list[int] = list(md.get("tokenizer.ggml.token_type", [_TOKEN_NORMAL] * len(tokens)))
        merges = [tuple(m.split(" ")) for m in md["tokenizer.ggml.merges"]]
        vocab = {t: i for i, t in enumerate(tokens)}
        if len(vocab) != len(tokens):
            raise ValueError("GGUF vocabulary has duplicate tokens")
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
        tok.pre_tokenizer = _pre_tokenizer(str(md.get("tokenizer.ggml.pre", "default")))
        tok.decoder = decoders.ByteLevel()
        special = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == _TOKEN_CONTROL]
        user = [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == _TOKEN_USER_DEFINED]
        tok.add_special_tokens(special)
        if user:
            tok.add_tokens(user)
        if tok.get_vocab_size(with_added_tokens=True) != len(tokens):
            raise ValueError("adding the special tokens changed the vocabulary size")
        self.tokenizer = tok
        self.vocab_size = len(tokens)
        self.special_tokens = [t.content for t in special]
        self.bos_id = md.get("tokenizer.ggml.bos_token_id")
        self.eos_id = md.get("tokenizer.ggml.eos_token_id")
        self.pad_id = md.get("tokenizer.ggml.padding_token_id")
        self.add_bos = bool(md.get("tokenizer.ggml.add_bos_token", False))
        self.add_eos = bool(md.get("tokenizer.ggml.add_eos_token", False))
        self.chat_template = md.get("tokenizer.chat_template")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids. Special tokens written in the text (``<|im_start|>``) map to
        their ids; ``add_special_tokens`` adds BOS/EOS only where the GGUF says
        so (for SmolLM2 it adds nothing)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if add_special_tokens:
            if self.add_bos and self.bos_id is not None:
                ids = [self.bos_id] + ids
            if self.add_eos and self.eos_id is not None:
                ids = ids + [self.eos_id]
        return ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        return [self.encode(t, add_special_tokens) for t in texts]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str | None:
        return self.tokenizer.id_to_token(int(i))

    def render_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (``[{"role": ..., "content": ...}]``)
        from the GGUF's Jinja chat template (needs ``jinja2``)."""
        if not self.chat_template:
            raise ValueError("the GGUF has no chat template")
        import jinja2

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        return env.from_string(self.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt
        )

    def encode_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.render_chat(messages, add_generation_prompt))


@functools.lru_cache(maxsize=None)
def _minilm_cached(path: str) -> MiniLMTokenizer:
    return MiniLMTokenizer(path)


def minilm_tokenizer() -> MiniLMTokenizer:
    """The packaged MiniLM tokenizer (cached per process)."""
    return _minilm_cached(str(minilm_dir()))


@functools.lru_cache(maxsize=None)
def _smollm2_cached(path: str) -> SmolLM2Tokenizer:
    return SmolLM2Tokenizer(gguf_file(path).metadata)


def smollm2_tokenizer() -> SmolLM2Tokenizer:
    """The packaged SmolLM2 tokenizer (cached per process)."""
    return _smollm2_cached(str(smollm2_gguf_path().resolve()))
