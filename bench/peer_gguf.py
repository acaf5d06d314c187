#!/usr/bin/env python3
"""Writes the language model of a Hugging Face LLaVA checkpoint as a GGUF file for llama.cpp.

The peer benchmark (bench/peer_llama_cpp.py) runs llama.cpp on the very weights vlcache serves:
this reads the checkpoint's safetensors (mapped, one tensor at a time), its config.json and its
SentencePiece tokenizer.model, and writes llama.cpp's `llama` architecture with the `gguf` writer
that ships in the same llama.cpp source. Only the language model is written; the vision tower and
projector have no place in a text-only GGUF.

    build/venv/bin/python bench/peer_gguf.py --model DIR --out model-f32.gguf --outtype f32

Hugging Face stores each attention head's query and key rows as [first halves; second halves]
(rotate_half rotary embedding) where llama.cpp's `llama` rotary embedding pairs adjacent rows, so
those two matrices are reordered per head; everything else is copied. One-dimensional weights
(the norms) are stored as float32, as llama.cpp expects. Token types follow the tokenizer: ids
past its pieces (the image token, padding rows) become control tokens.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np


def import_gguf(llama_cpp_src):
    """The gguf package of the llama.cpp source the benchmark builds, so the writer and the
    reader agree on the format version."""
    if llama_cpp_src:
        sys.path.insert(0, os.path.join(llama_cpp_src, "gguf-py"))
    import gguf  # noqa: E402

    return gguf


class Safetensors:
    """The tensors of one or more safetensors files, each read through a read-only map."""

    DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}

    def __init__(self, model_dir):
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        self.tensors = {}
        for name in files:
            path = os.path.join(model_dir, name)
            with open(path, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_len))
            mapped = np.memmap(path, dtype=np.uint8, mode="r")
            base = 8 + header_len
            for key, info in header.items():
                if key == "__metadata__":
                    continue
                if info["dtype"] not in self.DTYPES:
                    raise SystemExit(f"{path}: tensor {key} has dtype {info['dtype']}, "
                                     "not F32, F16 or BF16")
                begin, end = info["data_offsets"]
                raw = mapped[base + begin:base + end]
                self.tensors[key] = (raw.view(self.DTYPES[info["dtype"]]).reshape(info["shape"]),
                                     info["dtype"])

    def get(self, *names):
        for name in names:
            if name in self.tensors:
                return self.tensors[name]
        raise SystemExit(f"the checkpoint has none of {names}")


def to_float32(array, dtype):
    if dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32)


def to_bfloat16_bits(array, dtype):
    """Round-to-nearest-even bfloat16 bits (the conversion LibTorch and ggml both make)."""
    if dtype == "BF16":
        return np.ascontiguousarray(array)
    bits = to_float32(array, dtype).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return bits.astype(np.uint16)


def rope_rows_interleaved(array, heads):
    """Per head, rows [0..d/2) and [d/2..d) become interleaved pairs (0, d/2), (1, d/2+1), ..."""
    rows = array.shape[0]
    half = rows // heads // 2
    return np.ascontiguousarray(
        array.reshape(heads, 2, half, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="LLaVA checkpoint directory (Hugging Face layout)")
    ap.add_argument("--out", required=True, help="GGUF file to write")
    ap.add_argument("--outtype", choices=["f32", "bf16", "f16"], default="f32",
                    help="dtype of the matrices (norms stay float32)")
    ap.add_argument("--llama-cpp-src", default="",
                    help="llama.cpp source tree whose gguf-py to use (else the installed gguf)")
    args = ap.parse_args()

    gguf = import_gguf(args.llama_cpp_src)
    import sentencepiece as spm

    with open(os.path.join(args.model, "config.json")) as f:
        config = json.load(f)
    text = config["text_config"]
    if text.get("model_type", "llama") not in ("llama", "mistral"):
        raise SystemExit(f"text model type {text.get('model_type')} is not a llama-family model")
    hidden = text["hidden_size"]
    heads = text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads", heads)
    head_dim = text.get("head_dim") or hidden // heads
    layers = text["num_hidden_layers"]
    vocab = text["vocab_size"]
    st = Safetensors(args.model)

    def weight(suffix):
        return st.get("language_model.model." + suffix, "model.language_model." + suffix)

    writer = gguf.GGUFWriter(args.out, "llama")
    writer.add_name(os.path.basename(os.path.normpath(args.model)))
    writer.add_context_length(text.get("max_position_embeddings", 4096))
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(text["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(text.get("rms_norm_eps", 1e-5))
    writer.add_rope_freq_base(text.get("rope_theta", 10000.0))
    writer.add_vocab_size(vocab)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                          "f16": gguf.LlamaFileType.MOSTLY_F16}[args.outtype])

    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model, "tokenizer.model"))
    tokens, scores, types = [], [], []
    T = gguf.TokenType
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        types.append(T.UNKNOWN if sp.is_unknown(i) else T.CONTROL if sp.is_control(i)
                     else T.BYTE if sp.is_byte(i) else T.UNUSED if sp.is_unused(i) else T.NORMAL)
    image_token = config.get("image_token_index", -1)
    for i in range(len(tokens), vocab):
        tokens.append(b"<image>" if i == image_token else f"<pad_{i}>".encode())
        scores.append(0.0)
        types.append(T.CONTROL)
    if len(tokens) > vocab:
        raise SystemExit(f"the tokenizer has {len(tokens)} pieces for {vocab} embedding rows")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(sp.bos_id())
    writer.add_eos_token_id(sp.eos_id())
    writer.add_unk_token_id(sp.unk_id())
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    def add(name, array, dtype, heads_for_rope=0):
        if array.ndim == 1 or args.outtype == "f32":
            out = to_float32(array, dtype)
        elif args.outtype == "f16":
            out = to_float32(array, dtype).astype(np.float16)
        else:
            out = to_bfloat16_bits(array, dtype)
        if heads_for_rope:
            out = rope_rows_interleaved(out, heads_for_rope)
        if out.dtype == np.uint16:
            writer.add_tensor(name, out, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(name, np.ascontiguousarray(out))

    add("token_embd.weight", *weight("embed_tokens.weight"))
    for i in range(layers):
        p = f"layers.{i}."
        add(f"blk.{i}.attn_norm.weight", *weight(p + "input_layernorm.weight"))
        add(f"blk.{i}.attn_q.weight", *weight(p + "self_attn.q_proj.weight"), heads_for_rope=heads)
        add(f"blk.{i}.attn_k.weight", *weight(p + "self_attn.k_proj.weight"),
            heads_for_rope=kv_heads)
        add(f"blk.{i}.attn_v.weight", *weight(p + "self_attn.v_proj.weight"))
        add(f"blk.{i}.attn_output.weight", *weight(p + "self_attn.o_proj.weight"))
        add(f"blk.{i}.ffn_norm.weight", *weight(p + "post_attention_layernorm.weight"))
        add(f"blk.{i}.ffn_gate.weight", *weight(p + "mlp.gate_proj.weight"))
        add(f"blk.{i}.ffn_up.weight", *weight(p + "mlp.up_proj.weight"))
        add(f"blk.{i}.ffn_down.weight", *weight(p + "mlp.down_proj.weight"))
    add("output_norm.weight", *weight("norm.weight"))
    if text.get("tie_word_embeddings", False):
        add("output.weight", *weight("embed_tokens.weight"))
    else:
        add("output.weight", *st.get("language_model.lm_head.weight", "lm_head.weight"))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {args.out} ({args.outtype}, {layers} layers, vocab {vocab})")


if __name__ == "__main__":
    main()
