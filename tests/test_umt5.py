"""umT5 encoder: parity with transformers through both checkpoint layouts, the real parameter count, the
prompt -> embedding path, the embedding cache, and the errors people see."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax.config import load_config
from fc_jax.convert.common import CheckpointError, save_params
from fc_jax.convert.umt5 import convert_checkpoint, target_shapes
from fc_jax.models.umt5 import UMT5Encoder, relative_position_buckets
from fc_jax.text import EmbeddingCache, TextEncoder, clean_prompt, load_tokenizer

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

CFG = load_config("tiny").umt5  # vocab 512, d_model 32, 4 heads x 8, d_ff 64, 2 layers, text_len 16

# Official Wan2.2 names, read off `wan/modules/t5.py` (T5Encoder: token_embedding, blocks[i] = T5SelfAttention
# with norm1, attn = T5Attention(q, k, v, o), norm2, ffn = T5FeedForward(gate = Sequential(Linear, GELU), fc1, fc2),
# pos_embedding = T5RelativeEmbedding(embedding); norm), paired with the transformers names of the same tensors.
# T5FeedForward computes fc2(fc1(x) * gelu(gate(x))); transformers computes wo(gelu(wi_0(x)) * wi_1(x)).
OFFICIAL_FROM_HF = {
    "token_embedding.weight": "shared.weight",
    "norm.weight": "encoder.final_layer_norm.weight",
    "blocks.{i}.norm1.weight": "encoder.block.{i}.layer.0.layer_norm.weight",
    "blocks.{i}.attn.q.weight": "encoder.block.{i}.layer.0.SelfAttention.q.weight",
    "blocks.{i}.attn.k.weight": "encoder.block.{i}.layer.0.SelfAttention.k.weight",
    "blocks.{i}.attn.v.weight": "encoder.block.{i}.layer.0.SelfAttention.v.weight",
    "blocks.{i}.attn.o.weight": "encoder.block.{i}.layer.0.SelfAttention.o.weight",
    "blocks.{i}.pos_embedding.embedding.weight": (
        "encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"
    ),
    "blocks.{i}.norm2.weight": "encoder.block.{i}.layer.1.layer_norm.weight",
    "blocks.{i}.ffn.gate.0.weight": "encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight",
    "blocks.{i}.ffn.fc1.weight": "encoder.block.{i}.layer.1.DenseReluDense.wi_1.weight",
    "blocks.{i}.ffn.fc2.weight": "encoder.block.{i}.layer.1.DenseReluDense.wo.weight",
}


@pytest.fixture(scope="module")
def hf_model():
    """transformers UMT5EncoderModel at the tiny config with every weight random (norm scales too), fp32."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=CFG.vocab_size, d_model=CFG.d_model, d_kv=CFG.d_kv, d_ff=CFG.d_ff, num_layers=CFG.num_layers,
        num_heads=CFG.num_heads, relative_attention_num_buckets=CFG.relative_attention_num_buckets,
        relative_attention_max_distance=CFG.relative_attention_max_distance, layer_norm_epsilon=CFG.eps,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = UMT5EncoderModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name else 0.3 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def checkpoints(hf_model, tmp_path_factory):
    """The same weights as a transformers folder, a transformers file holding both tied embedding keys, and an
    official-layout .pth."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("umt5")
    hf_model.save_pretrained(root / "hf")
    state = {k: v.detach().clone().contiguous() for k, v in hf_model.state_dict().items()}
    assert "shared.weight" in state and "encoder.embed_tokens.weight" in state
    save_file(state, str(root / "hf_tied.safetensors"))
    official = {}
    for ours, theirs in OFFICIAL_FROM_HF.items():
        for i in range(CFG.num_layers) if "{i}" in ours else [None]:
            official[ours.format(i=i)] = state[theirs.format(i=i)]
    torch.save(official, root / "models_t5_umt5-xxl-enc-bf16.pth")
    return {
        "transformers folder": str(root / "hf"),
        "transformers file, tied keys": str(root / "hf_tied.safetensors"),
        "official .pth": str(root / "models_t5_umt5-xxl-enc-bf16.pth"),
    }


@pytest.fixture(scope="module")
def params(checkpoints):
    return convert_checkpoint(checkpoints["transformers folder"], CFG)


def _padded_batch(length=160, lengths=(160, 57)):
    """Two prompts of different lengths, right-padded. Length 160 > max distance 128 reaches every bucket."""
    rng = np.random.default_rng(1)
    ids = rng.integers(3, CFG.vocab_size, size=(len(lengths), length)).astype(np.int32)
    mask = (np.arange(length)[None] < np.array(lengths)[:, None]).astype(np.int32)
    return np.where(mask, ids, 0), mask


@pytest.mark.parametrize(
    "layout, remat_policy",
    [("transformers folder", "none"), ("transformers file, tied keys", "none"), ("official .pth", "full")],
)
def test_parity_with_transformers(hf_model, checkpoints, layout, remat_policy):
    ids, mask = _padded_batch()
    with torch.no_grad():
        want = hf_model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask)).last_hidden_state
    params = convert_checkpoint(checkpoints[layout], CFG)
    cfg = CFG.copy_and_resolve_references()
    cfg.remat_policy = remat_policy
    got = UMT5Encoder.from_config(cfg).apply({"params": params}, ids, mask)
    want = want.numpy()
    # Every position, padded queries included (they attend to the real tokens in both implementations).
    assert np.max(np.abs(np.asarray(got) - want)) <= 1e-4 * np.max(np.abs(want))


def test_relative_position_buckets_match_transformers(hf_model):
    attention = hf_model.encoder.block[0].layer[0].SelfAttention
    rel = torch.arange(512)[None, :] - torch.arange(512)[:, None]
    want = attention._relative_position_bucket(rel).numpy()
    np.testing.assert_array_equal(relative_position_buckets(512, 32, 128), want)


def test_bf16(hf_model, params):
    ids, mask = _padded_batch(length=CFG.text_len, lengths=(16, 7))
    with torch.no_grad():
        want = hf_model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask))
    want = want.last_hidden_state.numpy()
    cfg = CFG.copy_and_resolve_references()
    cfg.update(param_dtype="bfloat16", dtype="bfloat16")
    bf16 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), params)
    got = UMT5Encoder.from_config(cfg).apply({"params": bf16}, ids, mask)
    assert got.dtype == jnp.bfloat16
    # These random weights give sharp (unscaled) attention, so bf16 drifts ~2% on average; a wrong path is ~100%.
    assert jnp.mean(jnp.abs(got.astype(jnp.float32) - want)) <= 5e-2 * jnp.mean(jnp.abs(want))


def test_real_parameter_count(hf_model):
    # REFERENCE §3: 5,680,910,336 = transformers' UMT5EncoderModel.num_parameters(), which counts the tied
    # `shared` / `encoder.embed_tokens` embedding once. Our encoder has exactly one embedding table, so the two
    # counts compare like with like; the tiny models check that convention.
    def count(model):
        shapes = target_shapes(model)
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))

    assert count(UMT5Encoder.from_config(CFG)) == hf_model.num_parameters()
    assert count(UMT5Encoder.from_config(load_config("wan22_ti2v_5b").umt5)) == 5_680_910_336


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A word-level tokenizer.json shaped like umT5's: <pad>=0, </s>=1, <unk>=2, EOS appended by its template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {f"w{i}": 3 + i for i in range(40)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    path = tmp_path_factory.mktemp("tokenizer")
    tok.save(str(path / "tokenizer.json"))
    return str(path)


PROMPTS = ["w1 w2 w3", "", " ".join(f"w{i}" for i in range(30)), "  w4\n\t w5 &amp;amp; zz "]


def test_tokenizer_matches_transformers_call(tokenizer_dir):
    from transformers import PreTrainedTokenizerFast

    ids, lengths = load_tokenizer(tokenizer_dir, CFG.text_len)(PROMPTS)
    hf = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(tokenizer_dir, "tokenizer.json"), pad_token="<pad>", eos_token="</s>"
    )
    # Upstream's call: cleaned text, padding="max_length", truncation=True, max_length=text_len.
    want = hf([clean_prompt(p) for p in PROMPTS], padding="max_length", truncation=True, max_length=CFG.text_len)
    np.testing.assert_array_equal(ids, np.array(want["input_ids"]))
    np.testing.assert_array_equal(lengths, np.array(want["attention_mask"]).sum(1))
    assert clean_prompt(PROMPTS[3]) == "w4 w5 & zz"
    assert list(lengths) == [4, 1, CFG.text_len, 5]  # EOS counted; the 30-word prompt is cut to 15 words + EOS
    assert ids[2, -1] == 1 and list(ids[2, :-1]) == [3 + i for i in range(15)]
    assert all(ids[r, n - 1] == 1 and not ids[r, n:].any() for r, n in enumerate(lengths))


def test_embeddings_trimmed_and_zero_padded(params, tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir, CFG.text_len)
    encoder = TextEncoder(CFG, params, tokenizer, batch_size=3)  # 4 prompts: two batches, the last one padded
    emb, lengths = encoder(PROMPTS)
    assert emb.shape == (len(PROMPTS), CFG.text_len, CFG.d_model)
    for row, n in enumerate(lengths):
        assert np.all(emb[row, n:] == 0)
        assert np.all(np.abs(emb[row, :n]).sum(-1) > 0)
    # The valid rows are what the prompt alone, unpadded, encodes to (upstream's trim; padding is masked out).
    ids, _ = tokenizer(PROMPTS[:1])
    alone = UMT5Encoder.from_config(CFG).apply({"params": params}, ids[:, : lengths[0]])[0]
    np.testing.assert_allclose(emb[0, : lengths[0]], alone, rtol=1e-5, atol=1e-5)


def test_embedding_cache_encodes_once_and_round_trips(params, tokenizer_dir, tmp_path):
    encoder = TextEncoder(CFG, params, load_tokenizer(tokenizer_dir, CFG.text_len), batch_size=2)
    calls = []

    def counting(prompts):
        calls.append(list(prompts))
        return encoder(prompts)

    cache = EmbeddingCache(CFG.text_len, counting)
    first, first_len = cache(["w1 w2", "", "w1 w2"])
    cache(["", "w3"])
    again, again_len = cache(["w1 w2", ""])
    assert calls == [["w1 w2", ""], ["w3"]]
    np.testing.assert_array_equal(again, first[:2])
    np.testing.assert_array_equal(again_len, first_len[:2])
    direct, direct_len = encoder(["w1 w2", ""])
    np.testing.assert_array_equal(first[:2], direct)
    np.testing.assert_array_equal(first_len[:2], direct_len)

    cache.save(tmp_path / "text_cache.npz")
    loaded = EmbeddingCache.load(tmp_path / "text_cache.npz")
    assert len(loaded) == 3 and loaded.text_len == CFG.text_len
    got, got_len = loaded(["w3", "", "w1 w2"])
    want, want_len = cache(["w3", "", "w1 w2"])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_len, want_len)
    with pytest.raises(KeyError, match="w9"):
        loaded(["w9"])


def test_text_encoder_loads_converted_params(params, tokenizer_dir, tmp_path):
    save_params(params, str(tmp_path / "umt5_params"))
    loaded = TextEncoder.load(CFG, str(tmp_path / "umt5_params"), tokenizer_dir)
    assert jax.tree_util.tree_structure(loaded.params) == jax.tree_util.tree_structure(params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params, params)
    assert loaded.tokenizer(["w1 w2"])[1].tolist() == [3]


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*tokenizer\.json.*spiece\.model"):
        load_tokenizer(str(tmp_path / "nowhere"), 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor spiece.model"):
        load_tokenizer(str(tmp_path / "empty"), 16)
    if importlib.util.find_spec("sentencepiece") is None:
        (tmp_path / "sp").mkdir()
        (tmp_path / "sp" / "spiece.model").write_bytes(b"")
        with pytest.raises(FileNotFoundError, match="sentencepiece package is not installed"):
            load_tokenizer(str(tmp_path / "sp"), 16)


def test_incomplete_checkpoint_is_a_clear_error(hf_model, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.detach().clone().contiguous() for k, v in hf_model.state_dict().items()}
    del state["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    state["encoder.block.1.layer.0.SelfAttention.extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError) as err:
        convert_checkpoint(str(tmp_path / "broken.safetensors"), CFG)
    assert "missing tensors (1): encoder.block.1.layer.1.DenseReluDense.wo.weight" in str(err.value)
    assert "unexpected tensors (1): encoder.block.1.layer.0.SelfAttention.extra.weight" in str(err.value)

    state = {k: v.detach().clone().contiguous() for k, v in hf_model.state_dict().items()}
    state["encoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(CFG.d_model, CFG.d_model + 1)
    save_file(state, str(tmp_path / "misshaped.safetensors"))
    with pytest.raises(CheckpointError, match=r"mis-shaped.*block\.0\.layer\.0\.SelfAttention\.q\.weight"):
        convert_checkpoint(str(tmp_path / "misshaped.safetensors"), CFG)

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a umT5 encoder checkpoint"):
        convert_checkpoint(str(tmp_path / "other.safetensors"), CFG)
