#!/usr/bin/env python3
"""End-to-end time to first token against the engine's bare prefill, on the same shapes.

Writes a random checkpoint of the given text shapes (vlcache-make-tiny), then alternates, --rounds
times: `vlcache-generate --json` on a prompt of about --prompt-tokens tokens (its ttft_ms: prompt
tokenised, embedded, prefilled, first token sampled, everything a user waits for), and
`vlcache-bench-engine` prefilling the same number of tokens on the same shapes (the model's
Prefill alone). Prints each round's ratio and the median and spread: what the pipeline adds on
top of the product itself.

  bench/ttft_vs_prefill.py --bin build/bin --out /tmp/ttft --rounds 5
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--out", required=True, help="where the checkpoint is written")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    model = os.path.join(a.out, "model")
    run([os.path.join(a.bin, "vlcache-make-tiny"), "--out", model, "--seed", "3",
         "--text-hidden", str(a.hidden), "--text-intermediate", str(a.intermediate),
         "--text-layers", str(a.layers), "--text-heads", str(a.heads),
         "--text-kv-heads", str(a.kv_heads)])
    with open(os.path.join(model, "config.json")) as f:
        vocab = json.load(f)["text_config"]["vocab_size"]

    # A prompt of the wanted length: the tiny tokenizer gives about 9 tokens per repetition;
    # the first generate run says how many it made, and the prefill benchmark uses that count.
    words = "the red square is left of the blue circle"
    prompt = " ".join([words] * max(1, a.prompt_tokens // 9))

    def generate():
        out = run([os.path.join(a.bin, "vlcache-generate"), "--model", model, "--prompt", prompt,
                   "--max-new-tokens", "1", "--kv-policy", "full", "--json"])
        j = json.loads(out.strip().splitlines()[-1])
        return j["ttft_ms"] / 1e3, j["prompt_tokens"]

    def prefill(tokens):
        out = run([os.path.join(a.bin, "vlcache-bench-engine"), "--hidden", str(a.hidden),
                   "--intermediate", str(a.intermediate), "--layers", str(a.layers),
                   "--heads", str(a.heads), "--kv-heads", str(a.kv_heads), "--vocab", str(vocab),
                   "--prompt", str(tokens), "--steps", "1", "--repeats", "1"])
        rate = float(out.split("prefill")[1].split("tokens/s")[0])
        return tokens / rate

    rows = []
    for r in range(a.rounds):
        ttft, tokens = generate()
        bare = prefill(tokens)
        rows.append({"round": r + 1, "prompt_tokens": tokens, "ttft_s": ttft, "prefill_s": bare,
                     "ratio": ttft / bare})
        print(f"round {r + 1}: {tokens} tokens, vlcache-generate TTFT {ttft:.3f} s, "
              f"bare prefill {bare:.3f} s, ratio {ttft / bare:.3f}", flush=True)
    ratios = [x["ratio"] for x in rows]
    print(f"median ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}) over {len(rows)} rounds")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rounds": rows, "median_ratio": statistics.median(ratios)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
