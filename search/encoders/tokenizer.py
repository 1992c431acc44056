"""open_clip's CLIP BPE tokenizer, rebuilt on Hugging Face ``tokenizers`` (no torch).

``convert`` runs once at export time (open_clip importable) and writes a
``tokenizer.json`` with open_clip's own vocabulary and merges; ``ClipTokenizer``
loads it in a process that never imports torch and reproduces open_clip's
output: the same text cleaning (ftfy, HTML unescape, whitespace, lower case),
``<start_of_text> … <end_of_text>``, truncation keeping the end token, zero
padding. The export compares both on probe texts before trusting it.
"""

from __future__ import annotations

import html
import os

import numpy as np

# open_clip SimpleTokenizer's split pattern. The split itself runs in Python with the same `regex`
# module and flags as open_clip (Unicode tables and case-insensitive matching of combining marks
# differ in the Rust engine); the Rust side does the byte-level BPE.
_SPLIT = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class UnsupportedTokenizer(ValueError):
    """Not open_clip's plain SimpleTokenizer: keep open_clip's own (torch) tokenizer."""


def convert(tokenizer, path: str) -> dict:
    """Write ``path`` (tokenizer.json) for an open_clip SimpleTokenizer; return its settings."""
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    if type(tokenizer) is not SimpleTokenizer:
        raise UnsupportedTokenizer(f"tokenizer {type(tokenizer).__name__}")
    if tokenizer.clean_fn is not _clean_lower or tokenizer.reduction_fn is not None:
        raise UnsupportedTokenizer("tokenizer with non-default cleaning or token reduction")
    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
    bpe = models.BPE(
        vocab=dict(tokenizer.encoder),
        merges=list(merges),
        continuing_subword_prefix="",
        end_of_word_suffix="</w>",
        fuse_unk=False,
    )
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # open_clip matches its markers inside the text too (a user typing them gets the special ids).
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in ("<start_of_text>", "<end_of_text>")])
    tmp = f"{path}.{os.getpid()}.tmp"
    tok.save(tmp)
    os.replace(tmp, path)
    return {
        "context_length": int(tokenizer.context_length),
        "sot": int(tokenizer.sot_token_id),
        "eot": int(tokenizer.eot_token_id),
    }


def _clean(text: str) -> str:
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    def __init__(self, path: str, context_length: int, sot: int, eot: int):
        import regex
        from tokenizers import Tokenizer

        self.pat = regex.compile(_SPLIT, regex.IGNORECASE)
        self.tok = Tokenizer.from_file(path)
        self.context_length, self.sot, self.eot = context_length, sot, eot

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        words = [self.pat.findall(_clean(t)) for t in texts]
        encoded = self.tok.encode_batch(words, is_pretokenized=True, add_special_tokens=False)
        for i, enc in enumerate(encoded):
            ids = [self.sot, *enc.ids, self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            out[i, : len(ids)] = ids
        return out


PROBE_TEXTS = [
    "a photo of a cat",
    "",
    "   ",
    "Hello, World!",
    "don't stop: it's 3.14 o'clock",
    "naïve café — résumé",
    "日本語のテキスト",
    "emoji 😀🐶 and symbols ©®",
    "&amp;lt;b&amp;gt; html &amp; entities",
    "UPPER lower MiXeD",
    "tab\tand\nnewline",
    "a " * 100,
    "x" * 300,
    "12345678901234567890",
    "<start_of_text> literal markers <end_of_text>",
    "keycap: #",
    "flag: United Kingdom",
]


def same_as(tokenizer, ours: ClipTokenizer, texts: list[str] = PROBE_TEXTS) -> str | None:
    """None if ``ours`` equals open_clip's ``tokenizer`` on ``texts``, else the first text that differs."""
    want = tokenizer(texts).numpy()
    got = ours(texts)
    for t, a, b in zip(texts, want, got):
        if not np.array_equal(a, b):
            return t
    return None


def load(meta: dict, folder: str) -> ClipTokenizer:
    return ClipTokenizer(
        os.path.join(folder, "tokenizer.json"), **{k: meta[k] for k in ("context_length", "sot", "eot")}
    )
