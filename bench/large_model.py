#!/usr/bin/env python3
"""A LLaVA-1.5-7B-shaped model on this machine: loading, memory, time to first token, decode.

Writes (once) a checkpoint of LLaVA-1.5-7B's shapes with random weights in bfloat16
(vlcache-make-tiny: 32 layers, hidden 4096, MLP 11008, vocabulary 32064, a CLIP ViT-L/14 tower
at 336 pixels) and answers one 336-pixel image (576 visual tokens) with vlcache-generate, served
in bfloat16 and with --quantize int8, rounds alternating. Each run is a fresh process, so its load
time and peak resident memory after loading are the user's. The weights' bytes in the serving
dtype are counted from the checkpoint's shapes, and the peak is reported against them (the
process's own baseline, measured on the tiny model, is subtracted).

With the peer environment (scripts/peer-setup.sh), llama.cpp runs the same language model
(bench/peer_gguf.py; llama-quantize for Q8_0) on the same prompt length and threads: llama-bench
prefill of the prompt's tokens and decode after it. llama.cpp's text-only GGUF has no vision
tower, so its prefill is of the same number of tokens, not of the image.

    build/peer/venv/bin/python bench/large_model.py --rounds 2 --json build/large-model.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHAPE = ["--text-hidden", "4096", "--text-intermediate", "11008", "--text-layers", "32",
         "--text-heads", "32", "--text-kv-heads", "32", "--text-vocab", "32064",
         "--vision-hidden", "1024", "--vision-intermediate", "4096", "--vision-layers", "24",
         "--vision-heads", "16", "--image-size", "336", "--patch-size", "14"]


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return p.stdout


def write_bmp(path, width, height, seed=0):
    """A 24-bit BMP of random pixels (no imaging library needed)."""
    import random
    import struct

    rng = random.Random(seed)
    row = (width * 3 + 3) // 4 * 4
    pixels = b"".join(bytes(rng.randrange(256) for _ in range(width * 3)) + bytes(row - width * 3)
                      for _ in range(height))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    with open(path, "wb") as f:
        f.write(header + info + pixels)


def weight_bytes(model_dir, quantize):
    """Bytes of the weights as served: bfloat16 everywhere, or with int8 the language model's
    matrices (and LM head) at one byte per weight plus a float32 scale per row."""
    import struct

    index = os.path.join(model_dir, "model.safetensors.index.json")
    files = (sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index)
             else ["model.safetensors"])
    total = 0
    for name in files:
        with open(os.path.join(model_dir, name), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for key, info in header.items():
            if key == "__metadata__":
                continue
            numel = 1
            for d in info["shape"]:
                numel *= d
            matrix = len(info["shape"]) == 2 and "embed_tokens" not in key
            lm = "language_model" in key or key.startswith("lm_head")
            if quantize == "int8" and matrix and lm:
                total += numel + 4 * info["shape"][0]
            else:
                total += 2 * numel
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", default="", help="checkpoint dir (default BUILD/peer/llava-7b-shape)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--no-llama", action="store_true", help="skip llama.cpp")
    ap.add_argument("--json", default="")
    a = ap.parse_args()

    build = os.path.abspath(a.build)
    bin_dir = os.path.join(build, "bin")
    model = a.model or os.path.join(build, "peer", "llava-7b-shape")
    if not os.path.exists(os.path.join(model, "config.json")):
        print(f"writing {model} (random weights, 14 GB)", flush=True)
        run([os.path.join(bin_dir, "vlcache-make-tiny"), "--out", model, "--seed", "7",
             "--dtype", "BF16", "--shards", "4"] + SHAPE)
    image = os.path.join(build, "peer", "image-336.bmp")
    if not os.path.exists(image):
        write_bmp(image, 336, 336)

    # The process's footprint without the model's weights: the same binary on a tiny model.
    tiny = os.path.join(build, "peer", "tiny-baseline")
    if not os.path.exists(os.path.join(tiny, "config.json")):
        run([os.path.join(bin_dir, "vlcache-make-tiny"), "--out", tiny, "--seed", "1"])

    def generate(model_dir, quantize, dtype="bfloat16"):
        return json.loads(run([os.path.join(bin_dir, "vlcache-generate"), "--model", model_dir,
                               "--image", image, "--prompt", "Describe the picture.",
                               "--dtype", dtype, "--quantize", quantize, "--threads",
                               str(a.threads), "--max-new-tokens", str(a.new_tokens),
                               # Loading alone: the warm-up's prefill would add its activations
                               # to the peak memory after load and make the request a warm one.
                               "--warm-up-requests", "0", "--json"]))

    baseline = generate(tiny, "none", "float32")["max_rss_after_load_bytes"]

    peer = None
    if not a.no_llama:
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        gguf_dir = os.path.join(build, "peer", "llava-7b-shape-gguf")
        os.makedirs(gguf_dir, exist_ok=True)
        peer = {"bf16": os.path.join(gguf_dir, "model-bf16.gguf"),
                "q8_0": os.path.join(gguf_dir, "model-q8_0.gguf")}
        llama_bin = os.path.join(build, "peer", "llama.cpp", "bin")
        if not os.path.exists(peer["bf16"]):
            print("writing the bfloat16 GGUF", flush=True)
            run([sys.executable, os.path.join(ROOT, "bench", "peer_gguf.py"), "--model", model,
                 "--out", peer["bf16"], "--outtype", "bf16"])
        if not os.path.exists(peer["q8_0"]):
            print("llama-quantize to Q8_0", flush=True)
            run([os.path.join(llama_bin, "llama-quantize"), peer["bf16"], peer["q8_0"], "Q8_0",
                 str(a.threads)])

    def llama(kind, prompt_tokens):
        common = [os.path.join(build, "peer", "llama.cpp", "bin", "llama-bench"), "-m", peer[kind],
                  "-t", str(a.threads), "-r", "1", "-o", "json"]
        pp = json.loads(run(common + ["-p", str(prompt_tokens), "-n", "0"]))
        tg = json.loads(run(common + ["-p", "0", "-n", str(a.new_tokens), "-d",
                                      str(prompt_tokens)]))
        return {"prefill_ms": pp[0]["samples_ns"][0] / 1e6,
                "decode_ms_per_token": tg[0]["samples_ns"][0] / 1e6 / a.new_tokens}

    rounds = []
    for r in range(a.rounds):
        row = {}
        for q in (("none", "int8") if r % 2 == 0 else ("int8", "none")):
            j = generate(model, q)
            row[q] = {k: j[k] for k in ("load_ms", "max_rss_after_load_bytes", "max_rss_bytes",
                                        "ttft_ms", "decode_ms_per_token", "prompt_tokens",
                                        "visual_tokens", "media_ms")}
            print(f"round {r + 1} vlcache {q}: {json.dumps(row[q])}", flush=True)
            if peer:
                kind = "bf16" if q == "none" else "q8_0"
                row["llama_" + kind] = llama(kind, j["prompt_tokens"])
                print(f"round {r + 1} llama.cpp {kind}: {json.dumps(row['llama_' + kind])}",
                      flush=True)
        rounds.append(row)

    summary = {"model": model, "threads": a.threads, "new_tokens": a.new_tokens,
               "process_baseline_bytes": baseline, "rounds": rounds}
    for q in ("none", "int8"):
        w = weight_bytes(model, q)
        rss = statistics.median(rd[q]["max_rss_after_load_bytes"] for rd in rounds)
        summary[q] = {
            "weight_bytes": w,
            "load_ms": statistics.median(rd[q]["load_ms"] for rd in rounds),
            "max_rss_after_load_bytes": rss,
            "peak_over_weights": (rss - baseline) / w,
            "ttft_ms": statistics.median(rd[q]["ttft_ms"] for rd in rounds),
            "decode_ms_per_token": statistics.median(rd[q]["decode_ms_per_token"] for rd in rounds),
            "prompt_tokens": rounds[0][q]["prompt_tokens"],
            "visual_tokens": rounds[0][q]["visual_tokens"],
        }
    if peer:
        for kind, q in (("bf16", "none"), ("q8_0", "int8")):
            summary["llama_" + kind] = {
                k: statistics.median(rd["llama_" + kind][k] for rd in rounds)
                for k in ("prefill_ms", "decode_ms_per_token")}
            summary["llama_" + kind]["decode_ratio"] = statistics.median(
                rd["llama_" + kind]["decode_ms_per_token"] / rd[q]["decode_ms_per_token"]
                for rd in rounds)
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
