#!/usr/bin/env python3
"""bench/peer_gguf.py's pieces that decide whether llama.cpp computes the same model as vlcache:
the checkpoint reader, the bfloat16 rounding, the reordering of query and key rows for
llama.cpp's rotary layout, and the vision tower's feature layer in llama.cpp's numbering. (The GGUF writer itself is checked by `make bench-peer`, which stops
unless both engines produce the same greedy tokens.)"""

import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import peer_gguf  # noqa: E402

BIN = os.environ.get("VLC_BIN_DIR", os.path.join(HERE, "..", "..", "build", "bin"))


def make_tiny(out, dtype):
    subprocess.run([os.path.join(BIN, "vlcache-make-tiny"), "--out", out, "--seed", "5",
                    "--dtype", dtype, "--text-vocab", "600", "--shards", "2"],
                   check=True, capture_output=True)


def rope_half(x, pos, theta=10000.0):
    """Hugging Face's rotary embedding: pairs (i, i + d/2), rotate_half."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = pos * inv
    cos, sin = np.concatenate([np.cos(ang)] * 2), np.concatenate([np.sin(ang)] * 2)
    rot = np.concatenate([-x[d // 2:], x[:d // 2]])
    return x * cos + rot * sin


def rope_adjacent(x, pos, theta=10000.0):
    """llama.cpp's `llama` rotary embedding: pairs (2i, 2i + 1)."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = pos * inv
    out = x.copy()
    out[0::2] = x[0::2] * np.cos(ang) - x[1::2] * np.sin(ang)
    out[1::2] = x[0::2] * np.sin(ang) + x[1::2] * np.cos(ang)
    return out


class PeerGgufTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.f32 = os.path.join(cls.tmp.name, "f32")
        cls.bf16 = os.path.join(cls.tmp.name, "bf16")
        make_tiny(cls.f32, "F32")
        make_tiny(cls.bf16, "BF16")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_reads_every_tensor_of_a_sharded_checkpoint(self):
        st = peer_gguf.Safetensors(self.f32)
        embed, dtype = st.get("language_model.model.embed_tokens.weight")
        self.assertEqual(dtype, "F32")
        self.assertEqual(embed.shape, (600, 64))
        self.assertEqual(st.get("language_model.lm_head.weight")[0].shape, (600, 64))
        self.assertEqual(st.get("language_model.model.layers.1.mlp.down_proj.weight")[0].shape,
                         (64, 128))
        self.assertGreater(float(np.abs(embed).max()), 0.0)
        with self.assertRaises(SystemExit):
            st.get("no.such.tensor")

    def test_bfloat16_rounding_matches_the_checkpoint_writer(self):
        # The same seed in float32 and in bfloat16: the writer (LibTorch) rounded to nearest even.
        f32 = peer_gguf.Safetensors(self.f32)
        bf16 = peer_gguf.Safetensors(self.bf16)
        for key in ("language_model.model.layers.0.self_attn.q_proj.weight",
                    "language_model.lm_head.weight"):
            a, adt = f32.get(key)
            b, bdt = bf16.get(key)
            self.assertEqual(bdt, "BF16")
            np.testing.assert_array_equal(peer_gguf.to_bfloat16_bits(a, adt), b)
            # and widening is exact
            np.testing.assert_array_equal(
                peer_gguf.to_float32(b, bdt),
                peer_gguf.to_float32(peer_gguf.to_bfloat16_bits(a, adt), "BF16"))
        # Ties go to even: 1 + 2^-8 lies halfway between two bfloat16 values.
        x = np.array([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, -2.5], dtype=np.float32)
        self.assertEqual(list(peer_gguf.to_bfloat16_bits(x, "F32")), [0x3F80, 0x3F82, 0xC020])

    def test_reordered_rows_give_the_same_attention_inputs_under_llama_cpps_rope(self):
        rng = np.random.default_rng(0)
        heads, d, hidden = 3, 8, 16
        w = rng.standard_normal((heads * d, hidden))
        x = rng.standard_normal(hidden)
        w_gguf = peer_gguf.rope_rows_interleaved(w, heads)
        for pos in (0, 1, 7, 100):
            hf = [rope_half((w @ x)[h * d:(h + 1) * d], pos) for h in range(heads)]
            lc = [rope_adjacent((w_gguf @ x)[h * d:(h + 1) * d], pos) for h in range(heads)]
            for h in range(heads):
                # Same vectors, llama.cpp's in interleaved order: dot products (attention scores)
                # between any two such vectors agree.
                self.assertAlmostEqual(float(hf[h] @ hf[h]), float(lc[h] @ lc[h]), places=9)
                np.testing.assert_allclose(lc[h][0::2], hf[h][:d // 2], atol=1e-12)
                np.testing.assert_allclose(lc[h][1::2], hf[h][d // 2:], atol=1e-12)
        # The row order within one head.
        rows = np.arange(2 * d, dtype=np.float32).reshape(2 * d, 1)
        self.assertEqual(list(peer_gguf.rope_rows_interleaved(rows, 2)[:d, 0]),
                         [0, 4, 1, 5, 2, 6, 3, 7])


    def test_feature_layer_counts_as_llama_cpp_does(self):
        # Hugging Face counts hidden states from the embeddings (index 0) and negative indices from
        # the last layer's output; llama.cpp's clip.vision.feature_layer names layer outputs, 0
        # the encoder's input. A 4-layer tower: -1 is layer 4 (the demo model), -2 layer 3
        # (LLaVA-1.5), and a list keeps its order.
        self.assertEqual(peer_gguf.feature_layers({"vision_feature_layer": -1}, 4), [4])
        self.assertEqual(peer_gguf.feature_layers({}, 4), [3])
        self.assertEqual(peer_gguf.feature_layers({"vision_feature_layer": [0, -1]}, 4), [0, 4])
        for outside in (5, -6):
            with self.assertRaises(SystemExit):
                peer_gguf.feature_layers({"vision_feature_layer": outside}, 4)


if __name__ == "__main__":
    unittest.main()
