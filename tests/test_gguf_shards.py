"""Per-shard GGUF reads (`gguf_reader.GGUFTensor`): only the blocks an index covers are dequantized.

Fast: on Q8_0, Q4_K, Q6_K, F16 and F32 tensors (random block bytes), every row/column range equals the
same range of the `gguf` package's dequantization of the whole tensor, bitwise, with the Q/K row
permutation undone on whole heads; a block-aligned range dequantizes exactly its own elements, an
unaligned one only the blocks it touches. On 2 processes x 4 devices, loading a small llama GGUF
(Q8_0 matrices, an F16 output matrix, F32 norms) onto a mesh whose fsdp axis spans the processes,
each process dequantizes only the elements its devices hold, and the shards equal the 1-device
load, itself bitwise the whole-tensor dequantization.
"""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest

from multiprocess_lib import run_processes
from sharpen_jax import gguf_reader

# a llama config whose shards split rows on head boundaries and columns on Q8_0 block boundaries
# (32 values) on the (data 1, fsdp 2, model 4) mesh
TINY = dict(vocab=128, dim=64, layers=2, heads=4, kv_heads=4, head_dim=32, hidden=128)


def _write(path, tensors: dict) -> None:
    """A GGUF file holding `tensors` ({name: (HF-layout values or block bytes, ggml type or None)})."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(TINY["layers"])
    writer.add_embedding_length(TINY["dim"])
    writer.add_feed_forward_length(TINY["hidden"])
    writer.add_head_count(TINY["heads"])
    writer.add_head_count_kv(TINY["kv_heads"])
    writer.add_key_length(TINY["head_dim"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(TINY["vocab"])
    writer.add_context_length(128)
    for name, (values, kind) in tensors.items():
        writer.add_tensor(name, values, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_tiny_llama_gguf(path) -> None:
    """A llama GGUF of the TINY shape with random weights: matrices Q8_0, output.weight F16, norms F32."""
    import gguf

    rng = np.random.default_rng(0)
    q8 = gguf.GGMLQuantizationType.Q8_0
    d, f, qh = TINY["dim"], TINY["hidden"], TINY["heads"] * TINY["head_dim"]
    kvh = TINY["kv_heads"] * TINY["head_dim"]

    def quantized(rows, cols):
        return gguf.quants.quantize(rng.standard_normal((rows, cols)).astype(np.float32), q8), q8

    tensors = {"token_embd.weight": quantized(TINY["vocab"], d),
               "output.weight": (rng.standard_normal((TINY["vocab"], d)).astype(np.float16), None),
               "output_norm.weight": (rng.random(d).astype(np.float32) + 0.5, None)}
    for i in range(TINY["layers"]):
        tensors.update({f"blk.{i}.attn_q.weight": quantized(qh, d), f"blk.{i}.attn_k.weight": quantized(kvh, d),
                        f"blk.{i}.attn_v.weight": quantized(kvh, d), f"blk.{i}.attn_output.weight": quantized(d, qh),
                        f"blk.{i}.ffn_gate.weight": quantized(f, d), f"blk.{i}.ffn_up.weight": quantized(f, d),
                        f"blk.{i}.ffn_down.weight": quantized(d, f),
                        f"blk.{i}.attn_norm.weight": (rng.random(d).astype(np.float32), None),
                        f"blk.{i}.ffn_norm.weight": (rng.random(d).astype(np.float32), None)})
    _write(path, tensors)


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.float32).view(np.uint32)


KINDS = ("Q8_0", "Q4_K", "Q6_K", "F16", "F32")
SCALE_OFFSETS = {"Q8_0": (0,), "Q4_K": (0, 2), "Q6_K": (208,)}  # bytes of each block's float16 scales (ggml)


@pytest.fixture(scope="module")
def kinds_file(tmp_path_factory):
    """One 8 x 512 tensor per type (random block bytes for the quantized ones), the GGUF's tensors by name."""
    import gguf

    rng = np.random.default_rng(1)
    tensors = {}
    for kind in KINDS:
        qtype = gguf.GGMLQuantizationType[kind]
        if kind in ("F16", "F32"):
            tensors[kind] = (rng.standard_normal((8, 512)).astype(kind.lower().replace("f", "float")), None)
        else:
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            blocks = rng.integers(0, 256, (8, 512 // block, size), dtype=np.uint8)
            for offset in SCALE_OFFSETS[kind]:  # finite float16 block scales
                blocks[..., offset:offset + 2] = rng.uniform(0.01, 0.1, blocks.shape[:2] + (1,)).astype(
                    np.float16).view(np.uint8)
            tensors[kind] = (blocks.reshape(8, -1), qtype)
    path = tmp_path_factory.mktemp("kinds") / "kinds.gguf"
    _write(path, tensors)
    return {t.name: t for t in gguf_reader.reader(str(path)).tensors}


@pytest.mark.parametrize("kind", KINDS)
def test_a_range_of_a_gguf_tensor_dequantizes_only_its_blocks_bitwise_as_the_whole(kind, kinds_file, monkeypatch):
    import gguf

    tensor = kinds_file[kind]
    whole = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
    assert whole.shape == (8, 512) and np.isfinite(whole).all() and np.unique(whole).size > 100
    real, dequantized = gguf.quants.dequantize, []
    monkeypatch.setattr(gguf.quants, "dequantize", lambda data, qtype: dequantized.append(real(data, qtype))
                        or dequantized[-1])
    lazy = gguf_reader.GGUFTensor(tensor, "kinds.gguf")
    block = 1 if kind in ("F16", "F32") else gguf.GGML_QUANT_SIZES[tensor.tensor_type][0]
    assert lazy.shape == (8, 512) and lazy.block == block
    for rows, cols in ((slice(None), slice(None)), (slice(2, 5), slice(256, 512)), (slice(7, 8), slice(0, 256)),
                       (slice(1, 6), slice(3, 300))):
        dequantized.clear()
        got = lazy[rows, cols]
        np.testing.assert_array_equal(_bits(got), _bits(whole[rows, cols]))
        r, c = range(8)[rows], range(512)[cols]
        touched = (-(-c.stop // block) - c.start // block) * block  # whole blocks covering the columns
        assert sum(x.size for x in dequantized) == len(r) * touched
        if c.start % block == 0 and c.stop % block == 0:
            assert touched == len(c)  # aligned: exactly its own elements


def test_the_qk_row_permutation_is_undone_on_whole_heads(kinds_file):
    import gguf

    tensor = kinds_file["Q8_0"]  # 8 rows = 2 heads of head_dim 4
    whole = gguf_reader.unpermute_rows(gguf.quants.dequantize(tensor.data, tensor.tensor_type), 2)
    lazy = gguf_reader.GGUFTensor(tensor, "kinds.gguf", 4, gguf_reader.unpermute_rows)
    for rows in (slice(None), slice(2, 4), slice(1, 6), slice(5, 6)):
        np.testing.assert_array_equal(_bits(lazy[rows, 32:96]), _bits(whole[rows, 32:96]))
    assert not np.array_equal(whole, gguf.quants.dequantize(tensor.data, tensor.tensor_type))  # it permutes


GGUF_SHARD_READS = textwrap.dedent("""
    import json, sys
    import gguf, jax, numpy as np
    from sharpen_jax import distributed, gguf_reader, weights

    distributed.initialize()
    real, read_elements = gguf.quants.dequantize, []

    def counted(data, qtype):
        out = real(data, qtype)
        read_elements.append(out.size)
        return out

    gguf.quants.dequantize = counted
    config, full = weights.load(sys.argv[1])  # on this process's first device: every element, once
    full_elements, read_elements[:] = sum(read_elements), []
    tensors = {t.name: t for t in gguf_reader.reader(sys.argv[1]).tensors}

    def whole(name, heads=None):  # the reference: the whole tensor dequantized, Q/K rows unpermuted
        t = tensors[name]
        value = real(t.data, t.tensor_type).astype(np.float32).reshape([int(d) for d in reversed(t.shape)])
        return value if heads is None else gguf_reader.unpermute_rows(value, heads)

    reference = {"embed": whole("token_embd.weight"), "lm_head": whole("output.weight").T,
                 "q": np.stack([whole(f"blk.{i}.attn_q.weight", config.num_heads).T for i in range(2)]),
                 "down": np.stack([whole(f"blk.{i}.ffn_down.weight").T for i in range(2)])}
    ours = {"embed": full["embed"]["embedding"], "lm_head": full["lm_head"],
            "q": full["layers"]["attn"]["q_proj"]["kernel"], "down": full["layers"]["mlp"]["down_proj"]["kernel"]}
    direct = all(np.array_equal(np.asarray(ours[k]), reference[k]) for k in reference)
    mesh = distributed.global_mesh(data=1, fsdp=2, model=4)  # fsdp spans the processes
    _, params = weights.load(sys.argv[1], mesh=mesh)
    leaves, full_leaves = jax.tree.leaves(params), jax.tree.leaves(full)
    own = sum(sum(int(np.prod(s.data.shape)) for s in {str(s.index): s for s in x.addressable_shards}.values())
              for x in leaves)
    equal = all(np.array_equal(np.asarray(s.data), np.asarray(f)[s.index]) for x, f in zip(leaves, full_leaves)
                for s in x.addressable_shards)
    print(json.dumps({"read": sum(read_elements), "own": own, "full": full_elements, "direct": direct,
                      "total": sum(x.size for x in leaves), "equal": equal}))
""")


def test_each_process_dequantizes_only_the_gguf_shards_its_devices_hold(tmp_path):
    path = tmp_path / "tiny-llama.gguf"
    write_tiny_llama_gguf(path)
    outputs = run_processes(GGUF_SHARD_READS, 2, 4, args=(str(path),), timeout=180)
    records = [json.loads(next(line for line in out.splitlines() if line.startswith("{"))) for out in outputs]
    for r in records:
        assert r["direct"], r  # the 1-device load is bitwise the whole-tensor dequantization
        assert r["full"] == r["total"]  # and it dequantizes every element once
        assert r["read"] == r["own"] < r["total"], r  # only this process's distinct shards, each once
        assert r["equal"], r  # bitwise the 1-device load
    assert records[0]["read"] + records[1]["read"] > records[0]["total"]  # the norms are replicated
    assert os.path.getsize(path) < 200_000
