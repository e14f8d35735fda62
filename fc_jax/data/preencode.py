"""`python -m fc_jax.data.preencode`: a triplet data set -> a latent data set for training.

    python -m fc_jax.data.preencode --config=sft_teacher --src=DATA/triplets --dst=DATA/latents \
        --vae=ckpt/vae --umt5=ckpt/umt5 --tokenizer=ckpt/google/umt5-xxl

--config is a packaged config (`sft_teacher`, `tiny`, ...; NAME:VARIANT for a variant) or a config file, with
`--config.a.b=value` overrides.

For every record of `FashionTriplets` under --src: VAE latents (posterior mean, normalised) of the video
(`encode_video`), the reference and the garment image (`encode_image`, one latent frame each); umT5 embeddings of
the dynamic caption and of dynamic + " " + static (the authors' caption order), trimmed to their lengths. Plus,
once, the empty-prompt embedding (guidance dropout) and the embedding of `config.sampling.negative_prompt` (the
real score's and the teacher sampler's unconditional text). The result is a `FashionLatents` data set under --dst.

- Sharded: each batch holds one record per local device and is split over them (a `data` mesh over the local
  devices); on several hosts, each process takes every process_count-th chunk of records.
- Resumable: records are encoded in chunks of --chunk, each written (atomically: temporary name, then rename) to
  DST/_preencode/<split>/chunk-NNNNNN.array_record; a rerun skips the chunks already there. The final data set is
  assembled from the chunks once all are done.
- Bad records (corrupt, or not of the config's video geometry) are skipped and listed, or stop the job with
  --on_bad_record=raise.
- --random_weights: random VAE / umT5 weights of the config and a hashing tokenizer, for smoke tests of the path
  (the latents mean nothing).
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import zlib

import jax
import numpy as np
from absl import app, flags

import fc_jax.config
from fc_jax import cli

log = logging.getLogger(__name__)

PROG = "python -m fc_jax.data.preencode"

FLAGS = flags.FlagValues()  # private: importing fc_jax.data.preencode defines no global flags
cli.DEFINE_config_file("config", None, "config with the model, vae, umt5 and video sections", FLAGS,
                       resolve=fc_jax.config.config_file)
_SRC = flags.DEFINE_string("src", None, "data_dir of the FashionTriplets data set", flag_values=FLAGS)
_DST = flags.DEFINE_string("dst", None, "data_dir for the FashionLatents data set", flag_values=FLAGS)
_VAE = flags.DEFINE_string("vae", None, "VAE weights: fc_jax orbax folder, official Wan2.2_VAE.pth or diffusers vae/",
                           flag_values=FLAGS)
_UMT5 = flags.DEFINE_string("umt5", None, "umT5 weights: fc_jax orbax folder or official / transformers checkpoint",
                            flag_values=FLAGS)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "google/umt5-xxl tokenizer folder or tokenizer.json",
                                 flag_values=FLAGS)
_RANDOM = flags.DEFINE_bool("random_weights", False, "random weights and a hashing tokenizer (smoke tests)",
                            flag_values=FLAGS)
_SPLITS = flags.DEFINE_list("splits", None, "splits to encode (default: all)", flag_values=FLAGS)
_CHUNK = flags.DEFINE_integer("chunk", 64, "records per resumable chunk", flag_values=FLAGS)
_ON_BAD = flags.DEFINE_enum("on_bad_record", "skip", ["skip", "raise"], "what a bad record does", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "seed of the random weights (--random_weights)", flag_values=FLAGS)
flags.mark_flags_as_required(["config", "src", "dst"], flag_values=FLAGS)

EMPTY_PROMPT = ""


# ----------------------------------------------------------------------------------------------------------------
# Encoders.


def hashing_tokenizer(text_len: int, vocab_size: int):
    """Words -> ids by CRC32 (ids 2..vocab-1; 0 = pad, 1 = EOS). Only for --random_weights smoke runs."""
    from fc_jax.text import Tokenizer

    encode = lambda text: [2 + zlib.crc32(w.encode()) % (vocab_size - 2) for w in text.split()]
    return Tokenizer(encode, pad_id=0, eos_id=1, text_len=text_len, source="hashing tokenizer (random weights)")


def _load(path: str, abstract, convert):
    from fc_jax.convert.common import is_orbax_checkpoint, load_params

    if os.path.isdir(path) and is_orbax_checkpoint(path):
        return load_params(path, abstract)
    return convert(path)


def load_encoders(config, vae_path, umt5_path, tokenizer_path, random_weights: bool, seed: int, batch: int):
    """(VAE params, TextEncoder) from converted / original checkpoints, or random ones."""
    from fc_jax.models import umt5, vae
    from fc_jax.models.umt5 import UMT5Encoder
    from fc_jax.text import TextEncoder, load_tokenizer

    if random_weights:
        print(f"--random_weights: RANDOM VAE and umT5 weights of config '{config.name}' and a hashing tokenizer "
              "(a smoke test; the latents mean nothing)", file=sys.stderr)
        key = jax.random.key(seed)
        vae_params = vae.init_params(config, jax.random.fold_in(key, 1))
        umt5_params = umt5.init_params(UMT5Encoder.from_config(config.umt5), jax.random.fold_in(key, 2),
                                       config.umt5.text_len)
        tokenizer = hashing_tokenizer(config.umt5.text_len, config.umt5.vocab_size)
        return vae_params, TextEncoder(config.umt5, umt5_params, tokenizer, batch_size=batch)
    missing = [name for name, v in (("--vae", vae_path), ("--umt5", umt5_path), ("--tokenizer", tokenizer_path))
               if not v]
    if missing:
        raise app.UsageError(f"{', '.join(missing)} required (or --random_weights for a smoke test)")
    from fc_jax.convert import umt5 as convert_umt5
    from fc_jax.convert import vae as convert_vae

    vae_params = _load(vae_path, vae.abstract_params(config), lambda p: convert_vae.convert_checkpoint(p, config))
    umt5_abstract = convert_umt5.target_shapes(UMT5Encoder.from_config(config.umt5))
    umt5_params = _load(umt5_path, umt5_abstract, lambda p: convert_umt5.convert_checkpoint(p, config))
    tokenizer = load_tokenizer(tokenizer_path, config.umt5.text_len)
    return vae_params, TextEncoder(config.umt5, umt5_params, tokenizer, batch_size=batch)


class BatchEncoder:
    """Pixel triplet batches -> latent examples; the batch split over the local devices."""

    def __init__(self, vae_params, text_encoder, devices):
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        self.vae_params = vae_params
        self.text = text_encoder
        self.size = len(devices)
        self.sharding = NamedSharding(Mesh(np.asarray(devices), ("data",)), PartitionSpec("data"))

    def pixels(self, frames: np.ndarray):
        """uint8 frames [B, ...] -> float [-1, 1], split over the devices along B."""
        x = frames.astype(np.float32) / 127.5 - 1.0
        return jax.device_put(x, self.sharding)

    def __call__(self, batch: dict) -> list[dict]:
        from fc_jax.models import vae

        n = len(batch["id"])
        pad = self.size - n
        padded = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) if pad else v
                  for k, v in batch.items() if k in ("video", "reference", "garment")}
        video = np.asarray(vae.encode_video(self.vae_params, self.pixels(padded["video"])))[:n]
        reference = np.asarray(vae.encode_image(self.vae_params, self.pixels(padded["reference"])))[:n]
        garment = np.asarray(vae.encode_image(self.vae_params, self.pixels(padded["garment"])))[:n]
        dynamic = [str(d) for d in batch["dynamic_caption"]]
        full = [f"{d} {s}" for d, s in zip(dynamic, map(str, batch["static_caption"]))]
        emb, lengths = self.text(dynamic + full)
        out = []
        for i in range(n):
            out.append({
                "id": str(batch["id"][i]),
                "video_latents": video[i].astype(np.float32),
                "reference_latent": reference[i].astype(np.float32),
                "garment_latent": garment[i].astype(np.float32),
                "dynamic_embedding": emb[i, : lengths[i]].astype(np.float32),
                "full_embedding": emb[n + i, : lengths[n + i]].astype(np.float32),
                "static_caption": str(batch["static_caption"][i]),
                "dynamic_caption": dynamic[i],
                "garment_type": str(batch["garment_type"][i]),
                "source": str(batch["source"][i]),
            })
        return out


# ----------------------------------------------------------------------------------------------------------------
# Chunks.


def chunk_path(dst: str, split: str, index: int) -> str:
    return os.path.join(dst, "_preencode", split, f"chunk-{index:06d}.array_record")


def write_chunk(path: str, examples: list[dict]) -> None:
    """Serialise latent examples into one ArrayRecord file, atomically."""
    from array_record.python.array_record_module import ArrayRecordWriter

    from fc_jax.data.triplets import latent_features

    features = latent_features()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    writer = ArrayRecordWriter(tmp, "group_size:1")
    for example in examples:
        writer.write(features.serialize_example(example))
    writer.close()
    os.replace(tmp, path)


def read_chunks(dst: str, split: str):
    """The latent examples of every chunk of `split`, in chunk order."""
    from array_record.python.array_record_module import ArrayRecordReader

    from fc_jax.data.triplets import latent_features

    features = latent_features()
    for path in sorted(glob.glob(os.path.join(dst, "_preencode", split, "chunk-*.array_record"))):
        reader = ArrayRecordReader(path)
        for i in range(reader.num_records()):
            example = features.deserialize_example_np(reader.read([i])[0])
            yield {k: (v.decode("utf-8") if isinstance(v, bytes) else v) for k, v in example.items()}
        reader.close()


def encode_split(builder, split: str, dst: str, encoder: BatchEncoder, config, chunk: int, on_bad_record: str,
                 process_index: int = 0, process_count: int = 1) -> list[str]:
    """Encode this process's missing chunks of `split`; returns the names of the records skipped."""
    from tqdm import tqdm

    from fc_jax.data.pipeline import triplet_pipeline

    n = builder.info.splits[split].num_examples
    chunks = [c for c in range(-(-n // chunk)) if c % process_count == process_index]
    todo = [c for c in chunks if not os.path.exists(chunk_path(dst, split, c))]
    if len(todo) < len(chunks):
        print(f"{split}: {len(chunks) - len(todo)} of {len(chunks)} chunks already encoded; resuming", file=sys.stderr)
    skipped: list[str] = []
    v = config.video
    with tqdm(total=sum(min(chunk, n - c * chunk) for c in todo), desc=f"encoding {split}", unit="record") as bar:
        for c in todo:
            data, skip = triplet_pipeline(
                builder, split, num_frames=v.num_frames, height=v.height, width=v.width, batch_size=encoder.size,
                start=c * chunk, stop=min((c + 1) * chunk, n), on_bad_record=on_bad_record,
            )
            examples = []
            for batch in data:
                examples += encoder(batch)
                bar.update(len(batch["id"]))
            bar.update(len(skip.skipped))
            skipped += skip.skipped
            write_chunk(chunk_path(dst, split, c), examples)
    return skipped


def write_prompt_embeddings(builder, text, negative_prompt: str) -> None:
    """Encode the empty prompt and `negative_prompt` once (`text`: prompts -> (embeddings, lengths)) and write
    them beside the latent data set, trimmed to their lengths, with the negative prompt's text."""
    from fc_jax.data import triplets

    emb, lengths = text([EMPTY_PROMPT, negative_prompt])
    np.save(triplets.empty_prompt_path(builder), emb[0, : lengths[0]].astype(np.float32))
    embedding_path, text_path = triplets.negative_prompt_paths(builder)
    np.save(embedding_path, emb[1, : lengths[1]].astype(np.float32))
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(negative_prompt)


def preencode(config, src: str, dst: str, encoder: BatchEncoder, splits=None, chunk: int = 64,
              on_bad_record: str = "skip"):
    """Encode `splits` (default all) of the triplets under `src` into a latent data set under `dst`."""
    from fc_jax.data import triplets
    from fc_jax.distributed import is_main_process, sync

    builder = triplets.open_builder("triplets", src)
    splits = list(splits or builder.info.splits)
    unknown = [s for s in splits if s not in builder.info.splits]
    if unknown:
        raise ValueError(f"{src} has no split(s) {unknown}; it has {sorted(builder.info.splits)}")
    if triplets.FashionLatents(data_dir=dst).is_prepared():
        raise FileExistsError(f"{dst} already holds a finished latent data set")
    skipped = []
    for split in splits:
        skipped += encode_split(builder, split, dst, encoder, config, chunk, on_bad_record,
                                jax.process_index(), jax.process_count())
    sync("preencode chunks written")
    if is_main_process():
        out = triplets.write_dataset("latents", dst, {s: read_chunks(dst, s) for s in splits})
        write_prompt_embeddings(out, encoder.text, config.sampling.negative_prompt)
    sync("preencode data set written")
    return skipped


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:])."""
    cli.parse(FLAGS, PROG, argv, description=__doc__.split("\n\n", 1)[1])
    for name, flag in (("--src", _SRC.value), ("--dst", _DST.value)):
        if not flag:
            cli.fail(PROG, f"{name} is required")
    if not _RANDOM.value:
        missing = [name for name, v in (("--vae", _VAE.value), ("--umt5", _UMT5.value),
                                        ("--tokenizer", _TOKENIZER.value)) if not v]
        if missing:
            cli.fail(PROG, f"{', '.join(missing)} required (or --random_weights for a smoke test)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from fc_jax.distributed import initialize

    config = FLAGS.config
    initialize(config.get("distributed", {}).get("initialize", "auto"))
    devices = jax.local_devices()
    vae_params, text = load_encoders(config, _VAE.value, _UMT5.value, _TOKENIZER.value, _RANDOM.value,
                                     _SEED.value, len(devices))
    skipped = preencode(config, _SRC.value, _DST.value, BatchEncoder(vae_params, text, devices), _SPLITS.value,
                        _CHUNK.value, _ON_BAD.value)
    if skipped:
        print(f"skipped {len(skipped)} bad record(s): {skipped}", file=sys.stderr)
    print(f"wrote the latent data set to {_DST.value}", file=sys.stderr)


def run() -> None:
    """Console-script entry point (fc-jax-preencode)."""
    main()


if __name__ == "__main__":
    run()
