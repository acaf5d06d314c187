#!/usr/bin/env python3
"""The demo model's time to first token for one image, against llama.cpp doing the same work.

Run after `make bench-peer` has set up build/peer (llama.cpp with its multimodal library, mtmd,
and the package's Python bindings):

    build/peer/venv/bin/python bench/peer_demo_ttft.py --build build --rounds 15

Both sides answer "what colour is the square?" about models/demo/example.png with the demo's
weights in float32, on the same number of threads, and stop at the first token's greedy choice.

vlcache's side is `vlcache-generate --json` on models/demo: its `ttft_ms` covers decoding the PNG,
the vision tower and the projector, the prefill of the whole prompt (the template's text with the
picture's visual tokens) and the first token's sampling. Each run is a fresh process, so every
request is its first.

llama.cpp's side runs the same model as two GGUF files written once from the checkpoint
(bench/peer_gguf.py): the language model (build/peer/demo-f32.gguf) and the vision tower with its
projector as mtmd's multimodal projector file (build/peer/demo-mmproj-f32.gguf), both loaded once
through the package's bindings. A timed request goes from the PNG file to the first token:
mtmd_helper_bitmap_init_from_file (reading and decoding the PNG), mtmd_tokenize on the same
template with mtmd's media marker where vlcache has <image> (the text's ids and the picture's
preprocessing: resize, which is a copy at the tower's own size, and normalisation),
mtmd_helper_eval_chunks (the vision tower and projector on the picture, then the prefill of text,
visual and text tokens, with logits for the last position only) and the argmax of those logits.
The KV cache is cleared before each request and not timed; one untimed request comes first (the
first evaluation allocates the graphs), so llama.cpp's figure is a warm process's. The work is
the same as vlcache's (17 positions through 4 CLIP layers, 16 projected, 33 prompt tokens), but
not all of the arithmetic: llama.cpp's CLIP graph for this projector appends the class embedding
after the patches while it still numbers positions and picks the outputs as if it came first, so
each patch gets its neighbour's position embedding, the first patch's output is dropped and the
class token's is kept, and its GELUs are tanh approximations read from a float16 table. Its
visual tokens therefore differ from the checkpoint's; the first token agrees all the same.

Before any timing the two sides must agree: the same prompt ids (vlcache's rule for splitting the
template around the picture, rebuilt here with SentencePiece, against the text ids of mtmd's
chunks), the same number of visual tokens, and the same first greedy token; the benchmark stops
otherwise. The two sides alternate, the first side alternating round after round; the figure is
the median over rounds and the ratio the median (and range) of the per-round ratios.
"""

import argparse
import ctypes
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_llama_cpp import ROOT, Peer, run  # noqa: E402

QUESTION = "what colour is the square?"
TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"  # vlcache-generate's default chat template
IMAGE = "<image>"


def vlcache_prompt_ids(sp, prompt, visual_tokens, image_token):
    """The prompt ids vlcache feeds (its tokenizer's template rule): BOS and the text before the
    picture, the visual tokens, then the text after it without the lone "▁" dummy prefix
    SentencePiece would put first."""
    before, after = TEMPLATE.replace("{prompt}", prompt).split(IMAGE)
    tail = sp.encode(after)
    if tail and sp.id_to_piece(tail[0]) == "\u2581":
        tail = tail[1:]
    return [sp.bos_id()] + sp.encode(before) + [image_token] * visual_tokens + tail


class LlamaCppVision:
    """llama.cpp's language model and mtmd context, loaded once; first_token() is one request."""

    def __init__(self, peer, gguf, mmproj, threads):
        if not os.path.exists(os.path.join(peer.llama_bin, "libmtmd.so")):
            raise SystemExit("llama.cpp's libmtmd is not built: run scripts/peer-setup.sh "
                             "(make bench-peer)")
        # The bindings load libmtmd from this folder instead of the package's own lib/.
        os.environ["MTMD_CPP_LIB"] = peer.llama_bin
        self.llama_cpp = peer.bindings()
        from llama_cpp import mtmd_cpp
        from llama_cpp._logger import llama_log_callback

        self.mtmd = mtmd_cpp
        self.llm = self.llama_cpp.Llama(model_path=gguf, n_ctx=128, n_batch=512, n_ubatch=512,
                                        n_threads=threads, n_threads_batch=threads,
                                        verbose=False)
        # mtmd logs every image it encodes to stderr unless given the package's log filter.
        mtmd_cpp.mtmd_helper_log_set(llama_log_callback, None)
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = threads
        self.ctx = mtmd_cpp.mtmd_init_from_file(mmproj.encode(), self.llm.model, params)
        if not self.ctx:
            raise SystemExit(f"mtmd could not load {mmproj}")
        if not mtmd_cpp.mtmd_support_vision(self.ctx):
            raise SystemExit(f"{mmproj} has no vision tower")
        text = TEMPLATE.replace(IMAGE, mtmd_cpp.mtmd_default_marker().decode()).replace(
            "{prompt}", QUESTION).encode()
        self.text_bytes = text  # kept alive: the struct below points into it
        self.text = mtmd_cpp.mtmd_input_text(text=text, text_len=len(text), add_special=True,
                                             parse_special=True)
        self.memory = self.llama_cpp.llama_get_memory(self.llm.ctx)
        self.n_vocab = self.llama_cpp.llama_vocab_n_tokens(
            self.llama_cpp.llama_model_get_vocab(self.llm.model))

    def clear(self):
        self.llama_cpp.llama_memory_clear(self.memory, True)

    def first_token(self, image, image_token=-1):
        """One request on an empty KV cache: (greedy first token, milliseconds from the PNG file
        to that token, the prompt ids with image_token at the visual positions)."""
        m = self.mtmd
        chunks = m.mtmd_input_chunks_init()
        bitmap = None
        try:
            t0 = time.perf_counter()
            bitmap = m.mtmd_helper_bitmap_init_from_file(self.ctx, image.encode(), False)
            if not bitmap:
                raise SystemExit(f"mtmd could not read {image}")
            bitmaps = (m.mtmd_bitmap_p_ctypes * 1)(bitmap)
            if m.mtmd_tokenize(self.ctx, chunks, ctypes.byref(self.text), bitmaps, 1) != 0:
                raise SystemExit("mtmd_tokenize failed")
            n_past = self.llama_cpp.llama_pos(0)
            if m.mtmd_helper_eval_chunks(self.ctx, self.llm.ctx, chunks, 0, 0, 512, True,
                                         ctypes.byref(n_past)) != 0:
                raise SystemExit("mtmd_helper_eval_chunks failed")
            logits = np.ctypeslib.as_array(self.llama_cpp.llama_get_logits_ith(self.llm.ctx, -1),
                                           shape=(self.n_vocab,))
            token = int(logits.argmax())
            ms = (time.perf_counter() - t0) * 1e3
            ids = []
            for i in range(m.mtmd_input_chunks_size(chunks)):
                chunk = m.mtmd_input_chunks_get(chunks, i)
                if m.mtmd_input_chunk_get_type(chunk) == m.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t()
                    text_ids = m.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    ids += [text_ids[j] for j in range(n.value)]
                else:
                    ids += [image_token] * m.mtmd_input_chunk_get_n_tokens(chunk)
            return token, ms, ids
        finally:
            m.mtmd_input_chunks_free(chunks)
            if bitmap:
                m.mtmd_bitmap_free(bitmap)


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
    mmproj = os.path.join(peer.peer, "demo-mmproj-f32.gguf")
    for path, flag in ((gguf, "--out"), (mmproj, "--mmproj")):
        if not os.path.exists(path):
            run([sys.executable, os.path.join(ROOT, "bench", "peer_gguf.py"), "--model", a.model,
                 flag, path, "--outtype", "f32"])
    image = os.path.join(a.model, "example.png")
    with open(os.path.join(a.model, "config.json")) as f:
        image_token = json.load(f)["image_token_index"]

    def ours():
        return json.loads(run([os.path.join(peer.bin, "vlcache-generate"), "--model", a.model,
                               "--image", image, "--prompt", QUESTION, "--max-new-tokens", "1",
                               "--threads", str(a.threads), "--json"]))

    first = ours()  # also warms the page cache; not counted
    n_tokens, visual = first["prompt_tokens"], first["visual_tokens"]
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model, "tokenizer.model"))
    expected = vlcache_prompt_ids(sp, QUESTION, visual, image_token)
    if len(expected) != n_tokens:
        raise SystemExit(f"vlcache fed {n_tokens} prompt tokens, its template rule gives "
                         f"{len(expected)}: {expected}")

    peer_model = LlamaCppVision(peer, gguf, mmproj, a.threads)
    peer_model.clear()
    # The first evaluation allocates the graphs; not timed. It also checks the two sides agree.
    token, _, ids = peer_model.first_token(image, image_token)
    if ids != expected:
        raise SystemExit(f"the prompts differ:\n  vlcache   {expected}\n  llama.cpp {ids}")
    if token != first["token_ids"][0]:
        piece = sp.id_to_piece(token) if token < sp.get_piece_size() else "outside the tokenizer"
        raise SystemExit(f"the first greedy token differs: vlcache {first['token_ids'][0]} "
                         f"({first['text']!r}), llama.cpp {token} ({piece!r})")
    print(f"same prompt ({n_tokens} ids, {visual} visual) and first token: {token} "
          f"({first['text']!r})", flush=True)

    def theirs():
        peer_model.clear()
        got, ms, _ = peer_model.first_token(image)
        if got != token:
            raise SystemExit(f"llama.cpp's first token changed from {token} to {got}")
        return ms

    rounds = []
    for r in range(a.rounds):
        row = {}
        for side in (["ours", "llama"] if r % 2 == 0 else ["llama", "ours"]):
            row[side] = ours()["ttft_ms"] if side == "ours" else theirs()
        rounds.append(row)
    o = [rd["ours"] for rd in rounds]
    t = [rd["llama"] for rd in rounds]
    ratios = [b / c for c, b in zip(o, t)]
    result = {"prompt_tokens": n_tokens, "visual_tokens": visual, "first_token": token,
              "threads": a.threads, "rounds": rounds,
              "vlcache_ttft_ms": statistics.median(o), "llama_cpp_ms": statistics.median(t),
              "ratio": {"median": statistics.median(ratios), "min": min(ratios),
                        "max": max(ratios)}}
    print(f"demo model, one image, {n_tokens} prompt tokens, {a.threads} thread(s), {a.rounds} "
          f"rounds: vlcache TTFT {result['vlcache_ttft_ms']:.2f} ms (picture, vision tower and "
          f"prefill, a fresh process), llama.cpp {result['llama_cpp_ms']:.2f} ms (picture, "
          f"vision tower and prefill through mtmd, warm); vlcache ÷ llama.cpp as speed "
          f"{result['ratio']['median']:.2f} ({result['ratio']['min']:.2f}-"
          f"{result['ratio']['max']:.2f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
