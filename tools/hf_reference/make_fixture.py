#!/usr/bin/env python3
"""Writes a tiny random LLaVA checkpoint with Hugging Face transformers and the reference numbers
the engine's parity test (tests/engine/hf_parity_test.cc) compares against.

The checkpoint is built with transformers' own LlavaConfig / LlavaForConditionalGeneration (a
Llama text model with grouped-query attention, or a Mistral one with a sliding window shorter
than the prompt) and a CLIP vision tower, from a fixed seed, and saved with save_pretrained
(safetensors, fp32) beside the SentencePiece tokenizer.model given on the command line. For a
fixed prompt and a fixed image it records:

  reference.json     manifest: versions, prompt, input ids, generated ids, shapes, margins
  pixel_values.f32   transformers' CLIP image processor (PIL backend) output, [1, 3, S, S]
  logits.f32         [1 + steps, vocab]: the last prefill position, then each greedy decode step
  image.png          the fixed image (generated here from the seed)

Raw .f32 files are little-endian float32 in C order, so the C++ test reads them without numpy.

--layout picks the weight-key layout the checkpoint is stored in (tensors untouched):
  new     what transformers 4.52 to 4.x saves: model.language_model.*, lm_head.weight,
          model.vision_tower.vision_model.*, model.multi_modal_projector.*
  old     what transformers < 4.52 saves (and most Hub checkpoints hold): language_model.model.*,
          language_model.lm_head.weight, vision_tower.vision_model.*, multi_modal_projector.*
  native  what save_pretrained of the installed version wrote, unchanged (5.x: the old prefixes,
          but vision_tower.* without CLIPVisionModel's vision_model. level)
Either way the script loads the saved directory back with from_pretrained, checks that it
reproduces the same logits, and checks that every saved key is of the asked layout.

Usage (in a virtualenv with requirements.txt installed):
  python make_fixture.py --model llama --layout new --tokenizer tokenizer.model --out DIR
"""

import argparse
import copy
import json
import os
import shutil
import sys

import numpy as np
import PIL
import safetensors
import safetensors.torch
import sentencepiece
import tokenizers
import torch
import transformers
from PIL import Image
from transformers import (
    AddedToken,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    MistralConfig,
)

try:  # transformers >= 5 names the PIL-backed processor apart from the torchvision one
    from transformers import CLIPImageProcessorPil as ClipProcessor
except ImportError:  # transformers 4.x: CLIPImageProcessor is the PIL/NumPy one
    from transformers import CLIPImageProcessor as ClipProcessor

PROMPT = "what color is the circle?"
CHAT_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"
DECODE_STEPS = 10
IMAGE_SIZE = 32
PATCH_SIZE = 8
SLIDING_WINDOW = 16  # Mistral: shorter than the prompt, so the window changes the numbers
# One key of each part, recorded in the manifest to show the layout.
EXAMPLE_KEYS = ("embed_tokens.weight", "lm_head.weight", "patch_embedding.weight",
                "linear_1.weight")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["llama", "mistral"], required=True)
    p.add_argument("--layout", choices=["new", "old", "native"], default="new")
    p.add_argument("--tokenizer", required=True, help="SentencePiece tokenizer.model")
    p.add_argument("--out", required=True, help="output directory (replaced)")
    p.add_argument("--seed", type=int, default=1234)
    return p.parse_args()


def sp_vocab_size(path):
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
    return sp.get_piece_size()


def build_config(model_type, sp_vocab):
    image_token = sp_vocab  # the id right after the SentencePiece vocabulary, as in LLaVA
    vocab = (sp_vocab + 1 + 7) // 8 * 8  # padded to a multiple of 8, as LLaVA pads its table
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA: 2 query heads per KV head
        head_dim=16,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
    )
    if model_type == "llama":
        text = LlamaConfig(rope_theta=10000.0, attention_bias=False, mlp_bias=False, **common)
    else:
        text = MistralConfig(rope_theta=1000000.0, sliding_window=SLIDING_WINDOW, **common)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,  # feature layer -2: the last layer is loaded but unused
        num_attention_heads=2,
        num_channels=3,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        layer_norm_eps=1e-5,
        hidden_act="quick_gelu",
        projection_dim=32,
    )
    cfg = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )
    return cfg


def randomize(model, seed):
    """Replaces transformers' initialisation (std 0.02, norms at 1, biases at 0) by one where
    every tensor matters: matrices ~ N(0, 1/fan_in), norm weights around 1, biases non-zero.
    A weight loaded under the wrong name, transposed or skipped then changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() >= 2:
                fan_in = p[0].numel()
                if "embed_tokens" in name or "position_embedding" in name:
                    std = 1.0 if "embed_tokens" in name else 0.3
                else:
                    std = 1.0 / fan_in**0.5
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "class_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:  # norm weights
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)


def make_image(seed):
    """A 61x45 RGB image: gradients, a disc, a bar and noise, so that the antialiasing resize has
    real detail to filter (both edges shrink, by different factors)."""
    rng = np.random.default_rng(seed)
    h, w = 45, 61
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / (w - 1)
    g = 255 * y / (h - 1)
    b = 128 + 100 * np.sin(x / 3.0) * np.cos(y / 4.0)
    img = np.stack([r, g, b], -1)
    disc = (x - 40) ** 2 + (y - 20) ** 2 < 12**2
    img[disc] = [250, 30, 40]
    img[30:36, 5:50] = [20, 20, 220]
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def make_tokenizer(path, image_token_id):
    """transformers' LlamaTokenizer converted from the SentencePiece model, as llava-1.5's is set
    up (legacy=False, BOS added), with `<image>` as an added special token."""
    if os.path.basename(path) != "tokenizer.model":
        raise SystemExit("--tokenizer must point at a file named tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)), vocab_file=path,
                                         legacy=False, add_bos_token=True, add_eos_token=False)
    tok.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    got = tok.convert_tokens_to_ids("<image>")
    if got != image_token_id:
        raise SystemExit(f"<image> got id {got}, expected {image_token_id}")
    return tok


# Each part of a LLaVA checkpoint under the key prefixes transformers has saved it with:
#   new     4.52 <= transformers < 5 (model.language_model.*, lm_head.weight)
#   old     transformers < 4.52 (language_model.model.*, language_model.lm_head.weight)
#   native  whatever save_pretrained of the installed version wrote, left untouched; 5.x writes
#           the old prefixes for the language model and projector but drops CLIPVisionModel's
#           `vision_model.` level (vision_tower.embeddings.*)
# (part, new prefix, old prefix, further prefixes seen in saved checkpoints)
KEY_PARTS = (
    ("lm", "model.language_model.", "language_model.model.", ()),
    ("lm_head", "lm_head.", "language_model.lm_head.", ()),
    ("vision", "model.vision_tower.vision_model.", "vision_tower.vision_model.",
     ("model.vision_tower.", "vision_tower.")),
    ("projector", "model.multi_modal_projector.", "multi_modal_projector.", ()),
)


def to_layout(key, layout):
    """`key`, in whichever layout save_pretrained wrote it, renamed into `layout`."""
    for _, new, old, others in KEY_PARTS:
        for src in (new, old) + others:
            if key.startswith(src):
                return (new if layout == "new" else old) + key[len(src):]
    raise SystemExit(f"unexpected key in the saved checkpoint: {key}")


def check_layout(path, layout):
    with safetensors.safe_open(path, "pt") as f:
        keys = list(f.keys())
    if layout != "native":
        column = 1 if layout == "new" else 2
        prefixes = tuple(part[column] for part in KEY_PARTS)
        bad = [k for k in keys if not k.startswith(prefixes) or to_layout(k, layout) != k]
        if bad:
            raise SystemExit(f"{path}: keys not in the {layout} layout: {bad[:5]}")
    return keys


@torch.no_grad()
def greedy(model, input_ids, pixel_values, steps):
    """Prefill, then `steps` greedy decode steps through the KV cache. Returns the logits rows
    ([1 + steps, vocab]: prefill's last position, then each step) and the 1 + steps ids."""
    out = model(input_ids=input_ids, pixel_values=pixel_values, use_cache=True)
    rows = [out.logits[0, -1].clone()]
    ids = [int(rows[-1].argmax())]
    past = out.past_key_values
    for _ in range(steps):
        out = model(input_ids=torch.tensor([[ids[-1]]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        rows.append(out.logits[0, -1].clone())
        ids.append(int(rows[-1].argmax()))
    return torch.stack(rows), ids


@torch.no_grad()
def full_forward_rows(model, input_ids, pixel_values, generated):
    """The same rows from one cache-free forward over prompt + generated ids (a cross-check of
    the cached path inside transformers)."""
    seq = torch.cat([input_ids, torch.tensor([generated[:-1]])], 1)
    out = model(input_ids=seq, pixel_values=pixel_values, use_cache=False)
    n = input_ids.shape[1]
    return out.logits[0, n - 1:]


def rope_theta(text_config):
    params = getattr(text_config, "rope_parameters", None)  # transformers >= 5
    if params:
        return float(params["rope_theta"])
    return float(text_config.rope_theta)


def write_f32(path, t):
    a = np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4"))
    a.tofile(path)
    return list(a.shape)


LAYOUT_KEYS = {
    "new": "model.language_model.*, lm_head.weight, model.vision_tower.vision_model.*, "
           "model.multi_modal_projector.* (transformers 4.52 to 4.x)",
    "old": "language_model.model.*, language_model.lm_head.weight, vision_tower.vision_model.*, "
           "multi_modal_projector.* (transformers < 4.52)",
    "native": "as save_pretrained of transformers {transformers} wrote them",
}


def write_readme(out, m):
    """The directory's README: how it was made and with which versions; the meaning of the files
    is in tools/hf_reference/README.md."""
    a = m["args"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    checks = m["checks"]
    window = checks["without_sliding_window_max_abs_diff"]
    window = "n/a" if window is None else f"{window:.3g}"
    n_image = m["input_ids"].count(m["image_token_index"])
    text = f"""# {os.path.basename(os.path.normpath(out))}: Hugging Face parity fixture

Made by `tools/hf_reference/make_fixture.py --model {a["model"]} --layout {a["layout"]}
--seed {a["seed"]}` (all fixtures: `tools/hf_reference/make_all.sh`), with:
{versions}.
Do not edit by hand; rerun the script. `tests/engine/hf_parity_test.cc` checks the engine
against it; `tools/hf_reference/README.md` describes the model and every file.

- text model: {a["model"]}, sliding window: {m["sliding_window"]}, rope_theta: {m["rope_theta"]}
- weight keys: {LAYOUT_KEYS[a["layout"]].format(**m["versions"])}
- prompt: {json.dumps(m["text"])} ({len(m["input_ids"])} ids, {n_image} image tokens)
- greedy ids (prefill + {m["decode_steps"]} decode steps): {m["generated_ids"]}
- transformers' own checks (max abs logits differences): cached decode vs cache-free forward
  {checks["cached_vs_full_forward_max_abs_diff"]:.3g}; reloaded with from_pretrained
  {checks["reloaded_max_abs_diff"]:.3g}; without the sliding window {window}
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    sp_vocab = sp_vocab_size(args.tokenizer)
    cfg = build_config(args.model, sp_vocab)
    cfg._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(cfg).eval()
    randomize(model, args.seed)

    tok = make_tokenizer(args.tokenizer, cfg.image_token_index)
    image_processor = ClipProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=PIL.Image.BICUBIC,
        do_resize=True,
        do_center_crop=True,
        do_rescale=True,
        do_normalize=True,
        do_convert_rgb=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLS, dropped again by the "default" strategy
    )
    image = make_image(args.seed)
    text = CHAT_TEMPLATE.replace("{prompt}", PROMPT)
    inputs = processor(images=image, text=text, return_tensors="pt")
    input_ids = inputs["input_ids"]
    pixel_values = inputs["pixel_values"].float()
    n_image = int((input_ids == cfg.image_token_index).sum())
    assert n_image == (IMAGE_SIZE // PATCH_SIZE) ** 2, n_image
    if args.model == "mistral":
        assert input_ids.shape[1] > SLIDING_WINDOW

    logits, generated = greedy(model, input_ids, pixel_values, DECODE_STEPS)
    full = full_forward_rows(model, input_ids, pixel_values, generated)
    cache_vs_full = float((full - logits).abs().max())
    window_effect = None
    if args.model == "mistral":
        # The same weights without the window: the fixture only tests the window if this differs.
        cfg_full = copy.deepcopy(cfg)
        cfg_full.text_config.sliding_window = None
        unwindowed = LlavaForConditionalGeneration(cfg_full).eval()
        unwindowed.load_state_dict(model.state_dict())
        rows = full_forward_rows(unwindowed, input_ids, pixel_values, generated)
        window_effect = float((rows - logits).abs().max())
        assert window_effect > 1e-2, window_effect
    top2 = logits.topk(2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1]).tolist()

    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    model.save_pretrained(args.out, safe_serialization=True)
    weights = os.path.join(args.out, "model.safetensors")
    # Which layout save_pretrained writes depends on the transformers version; the keys are
    # renamed into the layout asked for, tensors untouched.
    state = safetensors.torch.load_file(weights)
    with safetensors.safe_open(weights, "pt") as f:
        metadata = f.metadata()
    saved_examples = sorted(k for k in state if k.endswith(EXAMPLE_KEYS))
    if args.layout != "native":
        safetensors.torch.save_file({to_layout(k, args.layout): v for k, v in state.items()},
                                    weights, metadata=metadata)
    os.chmod(weights, 0o644)  # save_pretrained leaves it private to the user
    keys = check_layout(weights, args.layout)
    shutil.copyfile(args.tokenizer, os.path.join(args.out, "tokenizer.model"))
    image_processor.save_pretrained(args.out)
    image.save(os.path.join(args.out, "image.png"))

    # The saved directory, read back by transformers, must give the same numbers.
    reloaded = LlavaForConditionalGeneration.from_pretrained(
        args.out, attn_implementation="eager", dtype=torch.float32).eval()
    logits2, generated2 = greedy(reloaded, input_ids, pixel_values, DECODE_STEPS)
    reload_diff = float((logits2 - logits).abs().max())
    if generated2 != generated or reload_diff > 1e-5:
        raise SystemExit(f"reloading {args.out} changed the output: ids {generated2} vs "
                         f"{generated}, max abs diff {reload_diff}")

    manifest = {
        "made_by": "tools/hf_reference/make_fixture.py",
        "args": {"model": args.model, "layout": args.layout, "seed": args.seed},
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentencepiece": sentencepiece.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
        },
        "attn_implementation": "eager",
        "image_processor": type(image_processor).__name__,
        "chat_template": CHAT_TEMPLATE,
        "prompt": PROMPT,
        "text": text,
        "image": "image.png",
        "input_ids": input_ids[0].tolist(),
        "image_token_index": cfg.image_token_index,
        "sliding_window": getattr(cfg.text_config, "sliding_window", None),
        "rope_theta": rope_theta(cfg.text_config),
        "pixel_values": {"file": "pixel_values.f32",
                         "shape": write_f32(os.path.join(args.out, "pixel_values.f32"),
                                            pixel_values)},
        "logits": {"file": "logits.f32",
                   "shape": write_f32(os.path.join(args.out, "logits.f32"), logits),
                   "rows": "row 0: last prefill position; row i: decode step i"},
        "decode_steps": DECODE_STEPS,
        "generated_ids": generated,
        "top1_margins": margins,
        "checks": {"cached_vs_full_forward_max_abs_diff": cache_vs_full,
                   "reloaded_max_abs_diff": reload_diff,
                   "without_sliding_window_max_abs_diff": window_effect,
                   "saved_keys": len(keys)},
        "keys_as_save_pretrained_wrote_them": saved_examples,
        "keys_as_stored": sorted(k for k in keys if k.endswith(EXAMPLE_KEYS)),
    }
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    write_readme(args.out, manifest)
    print(f"wrote {args.out}: model={args.model} layout={args.layout} "
          f"prompt_tokens={input_ids.shape[1]} generated={generated} "
          f"min_margin={min(margins):.4g} cached_vs_full={cache_vs_full:.3g}")


if __name__ == "__main__":
    main()
