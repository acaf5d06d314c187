#!/usr/bin/env python3
"""The demo model's time to first token for one image, against llama.cpp on its language model.

Run after `make bench-peer` has set up build/peer (llama.cpp and its Python bindings):

    build/peer/venv/bin/python bench/peer_demo_ttft.py --build build --rounds 15

vlcache's side is `vlcache-generate --json` on models/demo with its example picture: `ttft_ms`
covers decoding the PNG, the vision tower, the projector and the prefill of the whole prompt (the
picture's visual tokens and the question), and the first token's sampling; each run is a fresh
process, so every request is its first. llama.cpp's side is the demo's language model alone
(bench/peer_gguf.py, float32), evaluating as many prompt tokens as vlcache prefilled (the
question's own ids, padded with more of them) through the package's bindings, after one untimed
evaluation: it runs no vision tower, so the comparison is in llama.cpp's favour. The two sides
alternate, the first side alternating round after round; the figure is the median over rounds and
the ratio the median (and range) of the per-round ratios.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_llama_cpp import ROOT, Peer, run  # noqa: E402

QUESTION = "what colour is the square?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", default="")
    a = ap.parse_args()

    # Peer's constructor wants a text shape; only its paths and bindings are used here.
    shape = argparse.Namespace(build=a.build, hidden=0, intermediate=0, layers=0, heads=0,
                               kv_heads=0, vocab=0, threads=a.threads)
    peer = Peer(shape)
    gguf = os.path.join(peer.peer, "demo-f32.gguf")
    if not os.path.exists(gguf):
        run([sys.executable, os.path.join(ROOT, "bench", "peer_gguf.py"), "--model", a.model,
             "--out", gguf, "--outtype", "f32"])
    image = os.path.join(a.model, "example.png")

    def ours():
        j = json.loads(run([os.path.join(peer.bin, "vlcache-generate"), "--model", a.model,
                            "--image", image, "--prompt", QUESTION, "--max-new-tokens", "1",
                            "--threads", str(a.threads), "--json"]))
        return j["ttft_ms"], j["prompt_tokens"]

    _, n_tokens = ours()  # also warms the page cache; not counted
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model, "tokenizer.model"))
    question = sp.encode(QUESTION)
    ids = [sp.bos_id()] + (question * n_tokens)[: n_tokens - 1]
    llama_cpp = peer.bindings()
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=max(64, n_tokens + 8), n_batch=512,
                          n_ubatch=512, n_threads=a.threads, n_threads_batch=a.threads,
                          verbose=False)

    def theirs():
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        return (time.perf_counter() - t0) * 1e3

    theirs()  # the first evaluation allocates the graph; not timed
    rounds = []
    for r in range(a.rounds):
        row = {}
        for side in (["ours", "llama"] if r % 2 == 0 else ["llama", "ours"]):
            row[side] = ours()[0] if side == "ours" else theirs()
        rounds.append(row)
    o = [rd["ours"] for rd in rounds]
    t = [rd["llama"] for rd in rounds]
    ratios = [b / c for c, b in zip(o, t)]
    result = {"prompt_tokens": n_tokens, "threads": a.threads, "rounds": rounds,
              "vlcache_ttft_ms": statistics.median(o), "llama_cpp_ms": statistics.median(t),
              "ratio": {"median": statistics.median(ratios), "min": min(ratios),
                        "max": max(ratios)}}
    print(f"demo model, one image, {n_tokens} prompt tokens, {a.threads} thread(s), {a.rounds} "
          f"rounds: vlcache TTFT {result['vlcache_ttft_ms']:.2f} ms (picture, vision tower and "
          f"prefill), llama.cpp {result['llama_cpp_ms']:.2f} ms (prefill of the language model "
          f"alone); vlcache ÷ llama.cpp as speed {result['ratio']['median']:.2f} "
          f"({result['ratio']['min']:.2f}-{result['ratio']['max']:.2f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
