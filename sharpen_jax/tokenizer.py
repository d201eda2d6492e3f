"""Tokenizers from a HF directory (tokenizer.json) or a GGUF's embedded vocabulary, with chat templates.

The BPE itself is the `tokenizers` library; from GGUF we only translate llama.cpp's metadata
(tokens, merges, token types, special ids, pre-tokenizer name, chat template) into a
`tokenizers.Tokenizer`: byte-level BPE ("gpt2"), or Gemma's SentencePiece BPE with byte fallback
("llama" model in a gemma3 file), whose merges are rebuilt from the vocabulary. Chat templates are rendered with jinja2 in a sandbox, as transformers does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, normalizers, pre_tokenizers

from sharpen_jax import checks, gguf_reader
from sharpen_jax.jsonl import read_json

_CONTROL, _USER_DEFINED = 3, 4
# llama.cpp pre-tokenizer names -> pre-tokenizers of the matching HF tokenizer.json
_GPT2_SPLIT = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _gpt2_char_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte -> printable-character table (tokenizers does not expose it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


_GPT2_CHAR_TO_BYTE = _gpt2_char_to_byte()


def _pre_tokenizer(name: str | None):
    if name in ("smollm", "starcoder"):
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if name == "qwen2":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if name in (None, "default", "gpt2"):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    raise ValueError(f"GGUF pre-tokenizer {name!r} is not supported; expected smollm, starcoder, qwen2 or gpt2")


@dataclasses.dataclass(frozen=True)
class EncodedBatch:
    """Token ids [B, T] with a validity mask [B, T]; padding on the side given by `padding_side`."""

    tokens: np.ndarray
    valid: np.ndarray
    padding_side: str

    @property
    def lengths(self) -> np.ndarray:
        return self.valid.sum(axis=1)


class Tokenizer:
    """A `tokenizers.Tokenizer` plus special ids and an optional chat template."""

    def __init__(self, backend: HFTokenizer, *, bos_id: int | None, eos_ids: Sequence[int], pad_id: int,
                 chat_template: str | None = None, add_bos: bool = False):
        self.backend = backend
        self.bos_id = bos_id
        self.eos_ids = tuple(int(i) for i in eos_ids)
        self.pad_id = int(pad_id)
        self.chat_template = chat_template
        self.add_bos = add_bos

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text` (special-token strings in the text map to their ids)."""
        if not isinstance(text, str):
            raise TypeError(f"text is a {type(text).__name__}; expected str"
                            + (" (decode bytes to str first)" if isinstance(text, bytes) else ""))
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """The text of token ids `ids`, each an integer in [0, vocab_size)."""
        return self.backend.decode(checks.token_list("ids", ids, self.vocab_size),
                                   skip_special_tokens=skip_special_tokens)

    def encode_batch(self, texts: Sequence[str], *, padding_side: str = "left", length: int | None = None,
                     add_bos: bool | None = None) -> EncodedBatch:
        """Encode and pad to `length` (default: the longest) on the left or right."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; expected 'left' or 'right'")
        return pad_batch([self.encode(t, add_bos) for t in texts], self.pad_id, padding_side, length)

    def token_bytes(self) -> list[bytes]:
        """The UTF-8 bytes each token id contributes to decoded text (used by on-device stop matching).

        Byte-level BPE vocabularies map bytes to printable characters (GPT-2 scheme); SentencePiece
        style vocabularies use "\u2581" for spaces and "<0xNN>" byte-fallback tokens.
        """
        vocab = self.backend.get_vocab(with_added_tokens=True)
        added = {t.content for t in self.backend.get_added_tokens_decoder().values()}
        byte_level = isinstance(self.backend.decoder, decoders.ByteLevel)
        table = [b""] * self.vocab_size
        for token, index in vocab.items():
            if token in added:
                table[index] = token.encode("utf-8")
            elif byte_level:
                table[index] = bytes(_GPT2_CHAR_TO_BYTE[ch] for ch in token)
            elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                table[index] = bytes([int(token[3:5], 16)])
            else:
                table[index] = token.replace("\u2581", " ").encode("utf-8")
        return table

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """Render chat messages ([{"role", "content"}]) with the model's jinja2 chat template."""
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat template")
        template = _BudgetedSandbox(trim_blocks=True, lstrip_blocks=True).from_string(self.chat_template)
        bos = self.backend.id_to_token(self.bos_id) if self.bos_id is not None else ""
        eos = self.backend.id_to_token(self.eos_ids[0]) if self.eos_ids else ""
        pieces, size = [], 0
        for piece in template.generate(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                       bos_token=bos, eos_token=eos):
            size += len(piece)
            if size > CHAT_RENDER_BUDGET:
                raise _over_budget()
            pieces.append(piece)
        return "".join(pieces)


# The most characters a chat template may render: a long few-shot prompt is ~10^4, so 10^6 is ample;
# a template that multiplies strings or loops without bound stops here instead of filling memory.
CHAT_RENDER_BUDGET = 1_000_000


def _over_budget() -> ValueError:
    return ValueError(f"the chat template renders more than CHAT_RENDER_BUDGET = {CHAT_RENDER_BUDGET:,} "
                      f"characters; expected a template whose output is bounded by its messages")


class _BudgetedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox (as transformers renders chat templates) that also refuses `*` and
    `**` results beyond the render budget before computing them (output chunks are counted too)."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator: str, left, right):
        if operator == "*" and isinstance(left, (str, list, tuple)) and isinstance(right, int):
            if len(left) * right > CHAT_RENDER_BUDGET:
                raise _over_budget()
        if operator == "*" and isinstance(right, (str, list, tuple)) and isinstance(left, int):
            if len(right) * left > CHAT_RENDER_BUDGET:
                raise _over_budget()
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise ValueError(f"the chat template computes x ** {right}; expected exponents of at most 64")
        return super().call_binop(context, operator, left, right)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, padding_side: str = "left",
              length: int | None = None) -> EncodedBatch:
    """Pad token lists into an EncodedBatch of width `length` (>= the longest sequence)."""
    longest = max((len(s) for s in sequences), default=0)
    width = longest if length is None else length
    if width < longest:
        raise ValueError(f"pad length {width} is shorter than the longest sequence ({longest} tokens)")
    tokens = np.full((len(sequences), width), pad_id, np.int32)
    valid = np.zeros((len(sequences), width), bool)
    for row, seq in enumerate(sequences):
        if not seq:
            continue
        span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
        tokens[row, span] = seq
        valid[row, span] = True
    return EncodedBatch(tokens, valid, padding_side)


def sentencepiece_merges(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary that lists no merges (Gemma's GGUF).

    Every split of a token into two tokens is a merge; merges rank by the merged token's position in
    the vocabulary (earlier first; Gemma's scores do not follow its merge order), then by a longer
    left part. This is transformers' `generate_merges` as its Gemma GGUF converter calls it.
    """
    vocab = {token: index for index, token in enumerate(tokens)}
    ranked = []
    for token, index in vocab.items():
        for cut in range(1, len(token)):
            if token[:cut] in vocab and token[cut:] in vocab:
                ranked.append((index, -cut, vocab[token[:cut]], vocab[token[cut:]]))
    ranked.sort()
    return [(tokens[left], tokens[right]) for _, _, left, right in ranked]


def _gemma_backend(tokens: list[str]) -> HFTokenizer:
    """Gemma's SentencePiece BPE as `tokenizers` runs it (transformers' GemmaTokenizer): spaces become
    "▁", no prefix space, byte fallback; whitespace-only tokens stored as spaces are spelled "▁"."""
    tokens = ["▁" * len(t) if " " in t and not t.strip() else t for t in tokens]
    backend = HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=sentencepiece_merges(tokens),
                                     fuse_unk=True, unk_token="<unk>", byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return backend


def from_gguf(path: str) -> Tokenizer:
    """Tokenizer from the vocabulary, merges and special tokens embedded in a GGUF file."""
    r = gguf_reader.reader(path)
    meta = lambda key, default=None: gguf_reader.metadata(r, key, default)  # noqa: E731
    kind = meta("tokenizer.ggml.model")
    gemma = kind == "llama" and meta("general.architecture") == "gemma3"
    if kind != "gpt2" and not gemma:
        raise ValueError(f"{path}: GGUF tokenizer model {kind!r} is not supported (byte-level BPE 'gpt2', or "
                         f"SentencePiece 'llama' in a Gemma 3 file)")
    tokens = list(meta("tokenizer.ggml.tokens"))
    types = list(meta("tokenizer.ggml.token_type", [1] * len(tokens)))
    if gemma:
        backend = _gemma_backend(tokens)
    else:
        merges = [tuple(m.split(" ", 1)) for m in meta("tokenizer.ggml.merges")]
        backend = HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                         fuse_unk=False, byte_fallback=False))
        backend.pre_tokenizer = _pre_tokenizer(meta("tokenizer.ggml.pre"))
        backend.decoder = decoders.ByteLevel()
    from tokenizers import AddedToken

    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, kind in zip(tokens, types) if kind == _CONTROL])
    in_vocab = backend.get_vocab()  # Gemma's respelled whitespace tokens stay ordinary tokens (as in transformers)
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, kind in zip(tokens, types) if kind == _USER_DEFINED and t in in_vocab])
    eos = meta("tokenizer.ggml.eos_token_id")
    eot = meta("tokenizer.ggml.eot_token_id")
    eos_ids = [int(i) for i in (eos, eot) if i is not None]
    pad = meta("tokenizer.ggml.padding_token_id", eos)
    return Tokenizer(backend, bos_id=meta("tokenizer.ggml.bos_token_id"), eos_ids=eos_ids, pad_id=int(pad),
                     chat_template=meta("tokenizer.chat_template"), add_bos=bool(meta("tokenizer.ggml.add_bos_token",
                                                                                         False)))


def from_hf_dir(directory: str) -> Tokenizer:
    """Tokenizer from a HF checkpoint directory (tokenizer.json + tokenizer_config.json)."""
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.exists(path):
        raise ValueError(f"{directory}: no tokenizer.json")
    try:
        backend = HFTokenizer.from_file(path)
    except Exception as err:  # the tokenizers library raises its own Exception type, without the path
        raise ValueError(f"{path}: not a readable tokenizer.json ({err})") from None
    cfg_path = os.path.join(directory, "tokenizer_config.json")
    cfg = _read_json_object(cfg_path) if os.path.exists(cfg_path) else {}
    token_id = lambda tok: None if tok is None else backend.token_to_id(  # noqa: E731
        tok if isinstance(tok, str) else tok.get("content"))
    eos = token_id(cfg.get("eos_token"))
    pad = token_id(cfg.get("pad_token"))
    template = cfg.get("chat_template")
    template_path = os.path.join(directory, "chat_template.jinja")
    if template is None and os.path.exists(template_path):
        try:
            with open(template_path, encoding="utf-8") as f:
                template = f.read()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{template_path}: cannot read the chat template ({err})") from None
    if template is not None and not isinstance(template, str):
        raise ValueError(f"{cfg_path}: chat_template is a {type(template).__name__}; expected a jinja2 string")
    return Tokenizer(backend, bos_id=token_id(cfg.get("bos_token")), eos_ids=[eos] if eos is not None else [],
                     pad_id=pad if pad is not None else (eos or 0), chat_template=template,
                     add_bos=bool(cfg.get("add_bos_token", False)))


def _read_json_object(path: str) -> dict:
    """The JSON object in file `path`; a ValueError naming the file otherwise."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise ValueError(f"{path}: holds a JSON {type(value).__name__}; expected an object")
    return value


def load(path: str) -> Tokenizer:
    """Tokenizer for a short model name, a .gguf file or a HF checkpoint directory."""
    from sharpen_jax.weights import resolve

    path = resolve(path)
    return from_gguf(path) if path.endswith(".gguf") else from_hf_dir(path)
