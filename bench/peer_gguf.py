#!/usr/bin/env python3
"""Writes a Hugging Face LLaVA checkpoint as GGUF files for llama.cpp.

The peer benchmarks (bench/peer_llama_cpp.py, bench/peer_demo_ttft.py) run llama.cpp on the very
weights vlcache serves: this reads the checkpoint's safetensors (mapped, one tensor at a time),
its config.json, preprocessor_config.json and SentencePiece tokenizer.model, and writes them with
the `gguf` writer that ships in the same llama.cpp source. Two files, either or both per run:

    build/venv/bin/python bench/peer_gguf.py --model DIR --out model-f32.gguf --outtype f32
    build/venv/bin/python bench/peer_gguf.py --model DIR --mmproj mmproj-f32.gguf

--out is the language model, llama.cpp's `llama` architecture. Hugging Face stores each attention
head's query and key rows as [first halves; second halves] (rotate_half rotary embedding) where
llama.cpp's `llama` rotary embedding pairs adjacent rows, so those two matrices are reordered per
head; everything else is copied. One-dimensional weights (the norms) are stored as float32, as
llama.cpp expects. Token types follow the tokenizer: ids past its pieces (the image token,
padding rows) become control tokens.

--mmproj is the vision tower and the projector, the multimodal projector file of llama.cpp's
multimodal library (mtmd, its CLIP graph): projector type `mlp` (linear, GELU, linear, as in
LLaVA-1.5). The CLIP tower keeps its separate query, key and value projections, its pre-layernorm,
class and position embeddings; the tower's post-layernorm is not written, because LLaVA takes the
hidden state of `vision_feature_layer` (counted from the encoder's input: -1 is the last layer's
output) before that norm, and the file names that layer explicitly (llama.cpp otherwise stops one
layer early, the LLaVA-1.5 default of -2). The MLP activation follows `hidden_act`: llama.cpp's
CLIP uses quick GELU unless told GELU. The picture's mean and deviation come from
preprocessor_config.json and the input size from the tower's image_size; llama.cpp pads a
picture that is not square to a square and resizes it (bicubic) where Hugging Face resizes the
short side and crops the centre, so the two agree on square pictures of exactly that size. The
CLS token is dropped (strategy `default`); `full` has no counterpart in llama.cpp's graph.
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


def tensor_adder(gguf, writer, outtype):
    """add(name, array, dtype): matrices in `outtype`, one-dimensional weights in float32."""

    def add(name, array, dtype, heads_for_rope=0, keep_float32=False):
        if array.ndim == 1 or outtype == "f32" or keep_float32:
            out = to_float32(array, dtype)
        elif outtype == "f16":
            out = to_float32(array, dtype).astype(np.float16)
        else:
            out = to_bfloat16_bits(array, dtype)
        if heads_for_rope:
            out = rope_rows_interleaved(out, heads_for_rope)
        if out.dtype == np.uint16:
            writer.add_tensor(name, out, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(name, np.ascontiguousarray(out))

    return add


def file_type(gguf, outtype):
    return {"f32": gguf.LlamaFileType.ALL_F32, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
            "f16": gguf.LlamaFileType.MOSTLY_F16}[outtype]


def write_language_model(gguf, args, config, st):
    import sentencepiece as spm

    text = config["text_config"]
    if text.get("model_type", "llama") not in ("llama", "mistral"):
        raise SystemExit(f"text model type {text.get('model_type')} is not a llama-family model")
    hidden = text["hidden_size"]
    heads = text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads", heads)
    head_dim = text.get("head_dim") or hidden // heads
    layers = text["num_hidden_layers"]
    vocab = text["vocab_size"]

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
    writer.add_file_type(file_type(gguf, args.outtype))

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

    add = tensor_adder(gguf, writer, args.outtype)
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


def feature_layers(config, layers):
    """vision_feature_layer as llama.cpp counts it: 0 is the encoder's input (after the
    pre-layernorm), k the output of layer k; Hugging Face's negative indices count from the
    last layer's output (-1 is layer `layers`)."""
    chosen = config.get("vision_feature_layer", -2)
    chosen = chosen if isinstance(chosen, list) else [chosen]
    out = [k if k >= 0 else layers + 1 + k for k in chosen]
    if any(k < 0 or k > layers for k in out):
        raise SystemExit(f"vision_feature_layer {chosen} is outside the tower's {layers} layers")
    return out


def write_mmproj(gguf, args, config, st):
    vision = config["vision_config"]
    text = config["text_config"]
    if vision.get("model_type", "clip_vision_model") != "clip_vision_model":
        raise SystemExit(f"vision model type {vision.get('model_type')} is not a CLIP tower")
    if config.get("vision_feature_select_strategy", "default") != "default":
        raise SystemExit("vision_feature_select_strategy must be `default` (the CLS token dropped)")
    if config.get("projector_hidden_act", "gelu") != "gelu":
        raise SystemExit(f"projector_hidden_act {config['projector_hidden_act']}: llama.cpp's "
                         "`mlp` projector applies GELU")
    act = vision.get("hidden_act", "quick_gelu")
    if act not in ("quick_gelu", "gelu"):
        raise SystemExit(f"vision hidden_act {act}: llama.cpp's CLIP has quick GELU and GELU")
    hidden = vision["hidden_size"]
    layers = vision["num_hidden_layers"]
    with open(os.path.join(args.model, "preprocessor_config.json")) as f:
        pre = json.load(f)

    def weight(suffix):
        return st.get("vision_tower.vision_model." + suffix,
                      "model.vision_tower.vision_model." + suffix)

    def projector(suffix):
        return st.get("multi_modal_projector." + suffix, "model.multi_modal_projector." + suffix)

    K = gguf.Keys
    writer = gguf.GGUFWriter(args.mmproj, "clip")
    writer.add_name(os.path.basename(os.path.normpath(args.model)))
    writer.add_file_type(file_type(gguf, args.outtype))
    writer.add_bool(K.Clip.HAS_VISION_ENCODER, True)
    writer.add_string(K.Clip.PROJECTOR_TYPE, "mlp")
    writer.add_uint32(K.ClipVision.IMAGE_SIZE, vision["image_size"])
    writer.add_uint32(K.ClipVision.PATCH_SIZE, vision["patch_size"])
    writer.add_uint32(K.ClipVision.EMBEDDING_LENGTH, hidden)
    writer.add_uint32(K.ClipVision.FEED_FORWARD_LENGTH, vision["intermediate_size"])
    writer.add_uint32(K.ClipVision.BLOCK_COUNT, layers)
    writer.add_uint32(K.ClipVision.PROJECTION_DIM, text["hidden_size"])
    writer.add_uint32(K.ClipVision.Attention.HEAD_COUNT, vision["num_attention_heads"])
    writer.add_float32(K.ClipVision.Attention.LAYERNORM_EPS, vision.get("layer_norm_eps", 1e-5))
    writer.add_array(K.ClipVision.IMAGE_MEAN, [float(x) for x in pre["image_mean"]])
    writer.add_array(K.ClipVision.IMAGE_STD, [float(x) for x in pre["image_std"]])
    # Without either flag llama.cpp's CLIP MLP applies quick GELU, CLIP's own activation.
    writer.add_bool(K.ClipVision.USE_GELU, act == "gelu")
    # The key llama.cpp's CLIP loader reads (the gguf package has no constant for it).
    writer.add_array("clip.vision.feature_layer", feature_layers(config, layers))

    add = tensor_adder(gguf, writer, args.outtype)
    add("v.class_embd", *weight("embeddings.class_embedding"))
    # ggml's convolution kernel is [out, in, height, width] as PyTorch stores it; the patch and
    # position embeddings stay float32 (a few rows, read by the convolution and a row gather).
    add("v.patch_embd.weight", *weight("embeddings.patch_embedding.weight"), keep_float32=True)
    add("v.position_embd.weight", *weight("embeddings.position_embedding.weight"),
        keep_float32=True)
    add("v.pre_ln.weight", *weight("pre_layrnorm.weight"))
    add("v.pre_ln.bias", *weight("pre_layrnorm.bias"))
    for i in range(layers):
        p = f"encoder.layers.{i}."
        for ours, theirs in (("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
                             ("attn_v", "self_attn.v_proj"), ("attn_out", "self_attn.out_proj"),
                             ("ln1", "layer_norm1"), ("ln2", "layer_norm2"),
                             ("ffn_up", "mlp.fc1"), ("ffn_down", "mlp.fc2")):
            add(f"v.blk.{i}.{ours}.weight", *weight(p + theirs + ".weight"))
            add(f"v.blk.{i}.{ours}.bias", *weight(p + theirs + ".bias"))
    for ours, theirs in ((0, "linear_1"), (2, "linear_2")):
        add(f"mm.{ours}.weight", *projector(theirs + ".weight"))
        add(f"mm.{ours}.bias", *projector(theirs + ".bias"))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {args.mmproj} ({args.outtype}, CLIP {layers} layers, {act}, projector mlp)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="LLaVA checkpoint directory (Hugging Face layout)")
    ap.add_argument("--out", default="", help="GGUF file to write the language model to")
    ap.add_argument("--mmproj", default="",
                    help="GGUF file to write the vision tower and projector to (llama.cpp's mtmd)")
    ap.add_argument("--outtype", choices=["f32", "bf16", "f16"], default="f32",
                    help="dtype of the matrices (norms and biases stay float32)")
    ap.add_argument("--llama-cpp-src", default="",
                    help="llama.cpp source tree whose gguf-py to use (else the installed gguf)")
    args = ap.parse_args()
    if not args.out and not args.mmproj:
        ap.error("nothing to write: give --out, --mmproj or both")

    gguf = import_gguf(args.llama_cpp_src)
    with open(os.path.join(args.model, "config.json")) as f:
        config = json.load(f)
    st = Safetensors(args.model)
    if args.out:
        write_language_model(gguf, args, config, st)
    if args.mmproj:
        write_mmproj(gguf, args, config, st)


if __name__ == "__main__":
    main()
