"""The tiny world's text side: a word-level tokenizer over the world's caption vocabulary and the frozen text
encoder's random initialisation.

The 5B model reads captions through the google/umt5-xxl tokenizer and umT5-XXL; the tiny world keeps that path
(`fc_jax.text.load_tokenizer` reads a `tokenizer.json`, `fc_jax.text.TextEncoder` runs the umT5 encoder, the
`EmbeddingCache` holds the embeddings) with a tokenizer file built here by the `tokenizers` library — one id per
word or punctuation mark the captions can contain, `<pad>`, `</s>` and `<unk>` first — and a tiny umT5 whose
seeded random weights are frozen: the DiT learns to read them (issue "the tiny world").
"""

from __future__ import annotations

import os
import re

from fc_jax.text import EOS_TOKEN, PAD_TOKEN
from fc_jax.tinyworld import spec as S
from fc_jax.tinyworld import world as W

UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)
_WORD = re.compile(r"\w+|[^\w\s]")
# Words of the caption templates in `fc_jax.tinyworld.spec` (the phrases around the world's attribute words).
_TEMPLATE_WORDS = "a an and with hair in bun person skin wearing front of wall plain fading from to beside , -"


def words(text: str) -> list[str]:
    """The tokenizer's split of `text`: lower-cased words and single punctuation marks."""
    return _WORD.findall(text.lower())


def caption_vocabulary() -> list[str]:
    """Every word a tiny-world caption can contain (static and dynamic), sorted: the template words, each
    attribute's words, the motions' sentences."""
    phrases = [_TEMPLATE_WORDS, *W.GARMENT_COLOURS, *W.SKIN_TONES, *W.HAIR_COLOURS, *W.HAIR_STYLES,
               *W.WALL_WORDS.values(), *W.HEIGHT_WORDS.values(), *W.BUILD_WORDS.values(), *W.GARMENT_WORDS.values(),
               *W.PATTERN_WORDS.values(), *W.PERIOD_WORDS["stripes"].values(), *W.PERIOD_WORDS["other"].values(),
               *W.OBJECT_KINDS, *(S.dynamic_caption(S.Motion(kind, speed)) for kind in W.MOTIONS
                                  for speed in (W.SPEEDS if kind.startswith("walk") else ("",)))]
    return sorted({w for phrase in phrases for w in words(phrase)})


def build_tokenizer():
    """A `tokenizers.Tokenizer`: word level over `caption_vocabulary()`, lower-cased, split on whitespace and
    punctuation; ids 0, 1, 2 are `<pad>`, `</s>`, `<unk>`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *caption_vocabulary()])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                       pre_tokenizers.Punctuation()])
    return tokenizer


def write_tokenizer(folder: str) -> str:
    """Write `build_tokenizer()` as FOLDER/tokenizer.json (what `fc_jax.text.load_tokenizer` reads); returns the
    file's path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "tokenizer.json")
    build_tokenizer().save(path)
    return path
