"""Prompts -> umT5 embeddings exactly as the Wan2.2 DiT consumes them, and a cache so each prompt is encoded once.

Upstream (`wan/modules/t5.py` `T5EncoderModel`, `wan/modules/tokenizers.py`) cleans each prompt, tokenizes it with
the `google/umt5-xxl` tokenizer (EOS appended, truncated to `text_len` = 512 tokens including the EOS, padded
to 512), encodes it with the padded tokens masked out, trims each row to its true length, and the DiT then
zero-pads the rows back to 512. The result here is that padded array directly: `[B, text_len, d_model]` with
rows past each prompt's length exactly zero, plus the lengths.

Tokenizer files: the `google/umt5-xxl` folder (shipped with the Wan2.2 checkpoints) holds `tokenizer.json`, read
with the `tokenizers` library. A folder or file with only `spiece.model` needs the `sentencepiece` package.
Prompt cleaning follows upstream's "whitespace" mode (`ftfy.fix_text` when ftfy is installed, which only
changes mis-encoded text; HTML unescaping; whitespace collapsed).
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.models.umt5 import UMT5Encoder

TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
PAD_TOKEN, EOS_TOKEN = "<pad>", "</s>"


def clean_prompt(text: str) -> str:
    """Upstream's 'whitespace' cleaning: fix mis-encoded text (ftfy, if installed), unescape HTML twice,
    collapse runs of whitespace to one space, strip."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """Prompts -> fixed-length token ids, the way upstream calls the umT5 tokenizer.

    `encode_text` maps a cleaned string to ids WITHOUT special tokens; this class truncates to `text_len - 1`,
    appends EOS and right-pads with the pad id, so the result does not depend on the tokenizer file's own
    truncation, padding or post-processing settings.
    """

    encode_text: Callable[[str], list[int]]
    pad_id: int
    eos_id: int
    text_len: int
    source: str

    def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Returns ids int32 [B, text_len] and lengths int32 [B] (tokens incl. EOS; the rest is padding)."""
        ids = np.full((len(prompts), self.text_len), self.pad_id, np.int32)
        lengths = np.zeros((len(prompts),), np.int32)
        for row, prompt in enumerate(prompts):
            tokens = list(self.encode_text(clean_prompt(prompt)))[: self.text_len - 1] + [self.eos_id]
            ids[row, : len(tokens)] = tokens
            lengths[row] = len(tokens)
        return ids, lengths


def _missing_tokenizer(path: str, why: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"umT5 tokenizer not found at {path}: {why}. Provide the google/umt5-xxl tokenizer: a folder holding "
        f"{' or '.join(TOKENIZER_FILES)} (the 'google/umt5-xxl' folder of the Wan2.2 checkpoint, or the Hugging "
        f"Face repo google/umt5-xxl), or the path of one of those files."
    )


def _tokenizer_file(path: str) -> str:
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise _missing_tokenizer(path, "no such file or folder")
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise _missing_tokenizer(path, f"the folder has neither {' nor '.join(TOKENIZER_FILES)}")


def _special_id(file: str, token: str, token_id: int | None) -> int:
    if token_id is None or token_id < 0:
        raise ValueError(f"tokenizer {file} has no {token} token; is it the google/umt5-xxl tokenizer?")
    return int(token_id)


def load_tokenizer(path: str, text_len: int) -> Tokenizer:
    """The umT5 tokenizer from a folder or a `tokenizer.json` / `spiece.model` file."""
    file = _tokenizer_file(path)
    if file.endswith(".model"):
        try:
            import sentencepiece
        except ImportError as e:
            raise _missing_tokenizer(
                path, f"{file} is a sentencepiece model but the sentencepiece package is not installed"
            ) from e
        sp = sentencepiece.SentencePieceProcessor(model_file=file)
        pad, eos = _special_id(file, PAD_TOKEN, sp.pad_id()), _special_id(file, EOS_TOKEN, sp.eos_id())
        return Tokenizer(lambda text: sp.encode(text), pad, eos, text_len, file)

    from tokenizers import Tokenizer as HFTokenizer

    tok = HFTokenizer.from_file(file)
    pad = _special_id(file, PAD_TOKEN, tok.token_to_id(PAD_TOKEN))
    eos = _special_id(file, EOS_TOKEN, tok.token_to_id(EOS_TOKEN))
    tok.no_truncation()
    tok.no_padding()
    return Tokenizer(lambda text: tok.encode(text, add_special_tokens=False).ids, pad, eos, text_len, file)


def encode_tokens(model: UMT5Encoder, params, ids: jax.Array, lengths: jax.Array) -> jax.Array:
    """Encode padded ids int [B, L] with true lengths [B] -> [B, L, d_model], exactly zero past each length
    (= upstream's trim to the true length followed by the DiT's zero-padding back to L)."""
    mask = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    out = model.apply({"params": params}, ids, mask)
    return jnp.where(mask[..., None], out, jnp.zeros((), out.dtype))


class TextEncoder:
    """Prompts -> (embeddings [B, text_len, d_model], lengths int32 [B]), as numpy arrays.

    Runs the encoder jitted on fixed batches of `batch_size` prompts (the last batch padded with empty rows that
    are thrown away), so it compiles once whatever the number of prompts.
    """

    def __init__(self, config, params, tokenizer: Tokenizer, batch_size: int = 1):
        """`config`: the `umt5` section of an fc_jax config; `params`: a `UMT5Encoder` parameter tree."""
        if tokenizer.text_len != config.text_len:
            raise ValueError(
                f"the tokenizer pads to {tokenizer.text_len} tokens, the config's text_len is {config.text_len}"
            )
        self.model = UMT5Encoder.from_config(config)
        self.params = params
        self.tokenizer = tokenizer
        self.text_len = config.text_len
        self.batch_size = batch_size
        self._encode = jax.jit(lambda p, i, n: encode_tokens(self.model, p, i, n))

    @classmethod
    def load(cls, config, params_dir: str, tokenizer_path: str, batch_size: int = 1) -> "TextEncoder":
        """From converted parameters (`python -m fc_jax.convert umt5 ...`) and the tokenizer files."""
        from fc_jax.convert.common import load_params
        from fc_jax.convert.umt5 import target_shapes

        tokenizer = load_tokenizer(tokenizer_path, config.text_len)
        params = load_params(params_dir, target_shapes(UMT5Encoder.from_config(config)))
        return cls(config, params, tokenizer, batch_size)

    def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, lengths = self.tokenizer(prompts)
        pad = -len(prompts) % self.batch_size
        ids = np.concatenate([ids, np.full((pad, self.text_len), self.tokenizer.pad_id, np.int32)])
        padded_lengths = np.concatenate([lengths, np.zeros((pad,), np.int32)])
        batches = range(0, len(ids), self.batch_size)
        outs = [self._encode(self.params, ids[s : s + self.batch_size], padded_lengths[s : s + self.batch_size])
                for s in batches]
        return np.concatenate([np.asarray(o) for o in outs])[: len(prompts)], lengths


class EmbeddingCache:
    """Each distinct prompt (the empty guidance prompt included) encoded once per run; savable with a dataset.

    Holds per prompt its trimmed embedding [length, d_model] in float32 (lossless for bf16 outputs). Calling it
    with prompts returns (embeddings float32 [B, text_len, d_model] zero past each length, lengths int32 [B]),
    encoding only the prompts not seen yet, in one call of `encoder`. A cache loaded without an encoder serves
    only the prompts it holds.
    """

    def __init__(self, text_len: int, encoder: Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]] | None = None):
        self.text_len = text_len
        self.encoder = encoder
        self._rows: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, prompt: str) -> bool:
        return prompt in self._rows

    def prompts(self) -> list[str]:
        """The prompts held, in the order they were added."""
        return list(self._rows)

    def width(self) -> int | None:
        """The embeddings' width (d_model), or None while empty."""
        return next((row.shape[1] for row in self._rows.values()), None)

    def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        self._encode_missing(prompts)
        rows = [self._rows[p] for p in prompts]
        dim = rows[0].shape[1] if rows else 0
        out = np.zeros((len(prompts), self.text_len, dim), np.float32)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out, np.array([len(r) for r in rows], np.int32)

    def _encode_missing(self, prompts: Sequence[str]) -> None:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._rows))
        if not missing:
            return
        if self.encoder is None:
            raise KeyError(
                f"{len(missing)} prompt(s) are not in the embedding cache and it has no encoder: {missing[:3]}"
            )
        embeddings, lengths = self.encoder(missing)
        if embeddings.shape[1] != self.text_len:
            raise ValueError(f"the encoder pads to {embeddings.shape[1]} tokens, this cache to {self.text_len}")
        for prompt, emb, n in zip(missing, np.asarray(embeddings, np.float32), lengths):
            self._rows[prompt] = emb[:n].copy()

    def save(self, path: str) -> None:
        """Write the cache as an .npz (prompts, lengths, the trimmed rows concatenated, text_len); no pickles."""
        prompts = list(self._rows)
        rows = [self._rows[p] for p in prompts]
        np.savez(
            path,
            prompts=np.array(prompts, dtype=str),
            lengths=np.array([len(r) for r in rows], np.int32),
            embeddings=np.concatenate(rows) if rows else np.zeros((0, 0), np.float32),
            text_len=np.int32(self.text_len),
        )

    @classmethod
    def load(cls, path: str, encoder=None) -> "EmbeddingCache":
        """Read a cache written by `save`; `encoder` (optional) encodes prompts it does not hold."""
        with np.load(path, allow_pickle=False) as f:
            cache = cls(int(f["text_len"]), encoder)
            offsets = np.concatenate([[0], np.cumsum(f["lengths"])])
            embeddings = f["embeddings"]
            for i, prompt in enumerate(f["prompts"].tolist()):
                cache._rows[prompt] = embeddings[offsets[i] : offsets[i + 1]]
        return cache
