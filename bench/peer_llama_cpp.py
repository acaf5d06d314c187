#!/usr/bin/env python3
"""vlcache against llama.cpp on the same weights, the same threads, prompt and steps.

`make bench-peer` runs this with the environment scripts/peer-setup.sh makes (llama.cpp built
from the llama-cpp-python source on PyPI, its Python bindings on that build, the `gguf` writer).

1. A random checkpoint of the asked shape is written by vlcache-make-tiny (float32), and the same
   arrays as GGUF files (bench/peer_gguf.py: float32; llama-quantize makes bfloat16, float16 and
   Q8_0 from it).
2. Equal models first: the same prompt ids (llama.cpp's tokenisation of the text against
   SentencePiece's) and the same greedy tokens from vlcache-generate and from llama.cpp's float32
   model. The benchmark stops if they differ: the comparison would be between different models.
3. Rounds, each running every measure of both engines, the order of the engines alternating
   round after round (the machine is shared and its bandwidth drifts): vlcache-bench-engine
   against llama-bench for prefill and decode after the prompt (-d), vlcache-bench-engine --batch
   against llama-batched-bench for decoding several sequences together (bfloat16), and
   vlcache-generate's time to first token against llama.cpp evaluating the same prompt ids
   through its bindings.
4. Medians over rounds and the per-round ratios (median, min-max) go to a JSON file and, with
   --markdown, replace the peer section of docs/BENCHMARKS.md.
"""

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = "<!-- bench-peer:begin -->"
END = "<!-- bench-peer:end -->"

WORDS = ("the red square sits left of a blue circle while green triangles move across the frame "
         "and a small yellow star appears near the top right corner before it fades").split()


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return p.stdout


def median(xs):
    return statistics.median(xs)


class Peer:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.bin = os.path.join(self.build, "bin")
        self.peer = os.path.join(self.build, "peer")
        self.llama_bin = os.path.join(self.peer, "llama.cpp", "bin")
        srcs = sorted(glob.glob(os.path.join(self.peer, "llama_cpp_python-*")))
        srcs = [s for s in srcs if os.path.isdir(s)]
        if not srcs or not os.path.exists(os.path.join(self.llama_bin, "llama-bench")):
            raise SystemExit("llama.cpp is not built: run scripts/peer-setup.sh (make bench-peer)")
        self.src = srcs[-1]
        self.version = os.path.basename(self.src).split("-")[-1]
        shape = (f"h{args.hidden}-i{args.intermediate}-l{args.layers}-a{args.heads}-"
                 f"kv{args.kv_heads}-v{args.vocab}")
        self.work = os.path.join(self.peer, shape)
        self.model = os.path.join(self.work, "checkpoint")
        self.gguf = {t: os.path.join(self.work, f"model-{t}.gguf")
                     for t in ("f32", "bf16", "f16", "q8_0")}

    # ---- models
    def prepare(self):
        a = self.args
        if not os.path.exists(os.path.join(self.model, "config.json")):
            print(f"writing the random checkpoint {self.model}", flush=True)
            run([os.path.join(self.bin, "vlcache-make-tiny"), "--out", self.model, "--seed", "1",
                 "--dtype", "F32", "--text-hidden", str(a.hidden), "--text-intermediate",
                 str(a.intermediate), "--text-layers", str(a.layers), "--text-heads", str(a.heads),
                 "--text-kv-heads", str(a.kv_heads), "--text-vocab", str(a.vocab)])
        if not os.path.exists(self.gguf["f32"]):
            print("writing the float32 GGUF", flush=True)
            run([sys.executable, os.path.join(ROOT, "bench", "peer_gguf.py"), "--model",
                 self.model, "--out", self.gguf["f32"], "--outtype", "f32"])
        for t, name in (("bf16", "BF16"), ("f16", "F16"), ("q8_0", "Q8_0")):
            if not os.path.exists(self.gguf[t]):
                print(f"llama-quantize to {name}", flush=True)
                run([os.path.join(self.llama_bin, "llama-quantize"), self.gguf["f32"],
                     self.gguf[t], name, str(a.threads)])

    def bindings(self):
        os.environ["LLAMA_CPP_LIB_PATH"] = self.llama_bin
        sys.path.insert(0, self.src)
        import llama_cpp  # noqa: E402

        return llama_cpp

    def load_llama(self, gguf_path, n_ctx):
        llama_cpp = self.bindings()
        return llama_cpp.Llama(model_path=gguf_path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=512,
                               n_threads=self.args.threads, n_threads_batch=self.args.threads,
                               verbose=False)

    # ---- prompts
    def sp(self):
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=os.path.join(self.model, "tokenizer.model"))

    def prompt_of(self, n_tokens):
        """A text whose SentencePiece ids, after BOS, are exactly n_tokens - 1 long (or as close
        as the tokenizer's word boundaries allow; the length fed is checked and reported)."""
        sp = self.sp()
        target = n_tokens - 1
        words, i = [], 0
        while len(sp.encode(" ".join(words))) < target:
            words.append(WORDS[i % len(WORDS)])
            i += 1
        while len(sp.encode(" ".join(words))) > target:
            words.pop()
        # Top up with short words, each usually one more piece.
        for filler in ("a", "I", "x", "o", "e") * target:
            have = len(sp.encode(" ".join(words)))
            if have == target:
                break
            if len(sp.encode(" ".join(words + [filler]))) <= target:
                words.append(filler)
        text = " ".join(words)
        return text, [sp.bos_id()] + sp.encode(text)

    # ---- equal models
    def check(self):
        a = self.args
        text, ids = self.prompt_of(24)
        llm = self.load_llama(self.gguf["f32"], 256)
        theirs_ids = llm.tokenize(text.encode(), add_bos=True, special=False)
        if theirs_ids != ids:
            raise SystemExit(f"llama.cpp tokenises the prompt differently:\n  {theirs_ids}\n  {ids}")
        ours = json.loads(run([os.path.join(self.bin, "vlcache-generate"), "--model", self.model,
                               "--chat-template", "{prompt}", "--prompt", text,
                               "--max-new-tokens", str(a.check_tokens), "--threads",
                               str(a.threads), "--json"]))
        if ours["prompt_tokens"] != len(ids):
            raise SystemExit(f"vlcache fed {ours['prompt_tokens']} prompt tokens, not {len(ids)}")
        theirs = self.greedy(llm, ids, a.check_tokens)
        del llm
        same = ours["token_ids"] == theirs
        print(f"greedy tokens, float32: vlcache {ours['token_ids']}\n"
              f"                        llama.cpp {theirs} -> {'same' if same else 'DIFFERENT'}",
              flush=True)
        if not same:
            raise SystemExit("the two engines do not compute the same model; nothing is compared")
        return {"prompt_ids": len(ids), "greedy_tokens": theirs}

    def greedy(self, llm, ids, n):
        import numpy as np

        llm.reset()
        llm.eval(ids)
        out = []
        for _ in range(n):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
            tok = int(np.argmax(logits))
            out.append(tok)
            llm.eval([tok])
        return out

    # ---- measures
    def ours_bench(self, dtype, quantize):
        a = self.args
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            run([os.path.join(self.bin, "vlcache-bench-engine"), "--hidden", str(a.hidden),
                 "--intermediate", str(a.intermediate), "--layers", str(a.layers), "--heads",
                 str(a.heads), "--kv-heads", str(a.kv_heads), "--vocab", str(a.vocab), "--prompt",
                 str(a.prompt), "--steps", str(a.steps), "--threads", str(a.threads), "--repeats",
                 str(a.repeats), "--dtype", dtype, "--quantize", quantize, "--json", f.name])
            j = json.load(open(f.name))
        return {"prefill_ms": a.prompt / j["prefill_tokens_per_s"] * 1e3,
                "decode_ms": j["decode_ms_per_step"]}

    def llama_bench(self, kind):
        a = self.args
        common = [os.path.join(self.llama_bin, "llama-bench"), "-m", self.gguf[kind], "-t",
                  str(a.threads), "-r", str(a.repeats), "-o", "json"]
        pp = json.loads(run(common + ["-p", str(a.prompt), "-n", "0"]))
        tg = json.loads(run(common + ["-p", "0", "-n", str(a.steps), "-d", str(a.prompt)]))
        self.llama_build = pp[0].get("build_commit", "")
        return {"prefill_ms": median(pp[0]["samples_ns"]) / 1e6,
                "decode_ms": median(tg[0]["samples_ns"]) / 1e6 / a.steps}

    def ours_batch(self, batch):
        a = self.args
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            run([os.path.join(self.bin, "vlcache-bench-engine"), "--hidden", str(a.hidden),
                 "--intermediate", str(a.intermediate), "--layers", str(a.layers), "--heads",
                 str(a.heads), "--kv-heads", str(a.kv_heads), "--vocab", str(a.vocab), "--prompt",
                 str(a.batch_prompt), "--steps", str(a.batch_steps), "--batch", str(batch),
                 "--threads", str(a.threads), "--repeats", str(a.repeats), "--dtype", "bfloat16",
                 "--json", f.name])
            j = json.load(open(f.name))
        return {"decode_tokens_per_s": batch / (j["decode_ms_per_step"] / 1e3)}

    def llama_batch(self, batch):
        a = self.args
        samples = []
        for _ in range(a.repeats):
            out = run([os.path.join(self.llama_bin, "llama-batched-bench"), "-m", self.gguf["bf16"],
                       "-c", str(batch * (a.batch_prompt + a.batch_steps) + 64), "-b", "2048",
                       "-ub", "512", "-npp", str(a.batch_prompt), "-ntg", str(a.batch_steps),
                       "-npl", str(batch), "-t", str(a.threads), "--output-format", "jsonl"])
            rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            samples.append(rows[-1]["speed_tg"])  # generated tokens of all sequences per second
        return {"decode_tokens_per_s": median(samples)}

    def ours_ttft(self, text):
        a = self.args
        j = json.loads(run([os.path.join(self.bin, "vlcache-generate"), "--model", self.model,
                            "--chat-template", "{prompt}", "--prompt", text, "--max-new-tokens",
                            "1", "--threads", str(a.threads), "--json"]))
        return j["ttft_ms"], j["prompt_tokens"]

    def llama_ttft(self, llm, ids):
        import numpy as np

        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)))
        return (time.perf_counter() - t0) * 1e3


def ratio_stats(xs):
    return {"median": median(xs), "min": min(xs), "max": max(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    ap.add_argument("--steps", type=int, default=32, help="decode steps timed after the prompt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="repeats per measure within a round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--check-tokens", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8, help="sequences decoded together")
    ap.add_argument("--batch-prompt", type=int, default=128, help="prompt tokens per sequence")
    ap.add_argument("--batch-steps", type=int, default=16, help="decode steps of the batch")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--markdown", default="", help="replace the peer section of this file")
    a = ap.parse_args()

    peer = Peer(a)
    peer.prepare()
    result = {"shape": {k: getattr(a, k) for k in ("hidden", "intermediate", "layers", "heads",
                                                   "kv_heads", "vocab", "prompt", "steps",
                                                   "threads", "repeats", "rounds", "batch",
                                                   "batch_prompt", "batch_steps")},
              "llama_cpp_python": peer.version, "check": peer.check()}

    text, ids = peer.prompt_of(a.prompt)
    llm = peer.load_llama(peer.gguf["f32"], max(1024, a.prompt + 64))
    peer.llama_ttft(llm, ids)  # first evaluation allocates the graph; not timed
    # (name, vlcache engine run, llama.cpp model). vlcache's float16 on the CPU is float16
    # weights under float32 activations (LibTorch's CPU has no half arithmetic); llama.cpp's f16
    # file is float16 weights too.
    pairs = [("float32", ("float32", "none"), "f32"), ("bfloat16", ("bfloat16", "none"), "bf16"),
             ("float16", ("float16", "none"), "f16"), ("int8", ("bfloat16", "int8"), "q8_0")]
    rounds = []
    for r in range(a.rounds):
        # Each measure's two sides run back to back, the first side alternating round after
        # round, so a ratio compares runs seconds apart (the bandwidth drifts over minutes).
        row = {"ours": {}, "llama": {}}
        order = ["ours", "llama"] if r % 2 == 0 else ["llama", "ours"]
        for name, ours_cfg, kind in pairs:
            for side in order:
                if side == "ours" and ours_cfg:
                    row["ours"][name] = peer.ours_bench(*ours_cfg)
                elif side == "llama":
                    row["llama"][name] = peer.llama_bench(kind)
        for side in order:
            batch = peer.ours_batch if side == "ours" else peer.llama_batch
            row[side]["batch"] = batch(a.batch)
        for side in order:
            if side == "ours":
                row["ours"]["ttft_ms"], row["ours"]["ttft_prompt_tokens"] = peer.ours_ttft(text)
            else:
                row["llama"]["ttft_ms"] = peer.llama_ttft(llm, ids)
        rounds.append(row)
        print(f"round {r + 1}/{a.rounds}: " + json.dumps(row), flush=True)
    result["rounds"] = rounds
    result["llama_cpp_build"] = getattr(peer, "llama_build", "")

    def col(side, name, key):
        return [rd[side][name][key] for rd in rounds]

    # Each row: label, unit, our per-round values, theirs, and whether higher is better for the
    # raw figure (tokens/s) or lower (ms); the ratio is always "higher is better for vlcache".
    table = []

    def add(label, ours_vals, theirs_vals, unit, time_like=True):
        ratios = [t / o if time_like else o / t for o, t in zip(ours_vals, theirs_vals)]
        table.append({"measure": label, "unit": unit, "vlcache": median(ours_vals),
                      "llama_cpp": median(theirs_vals), "ratio": ratio_stats(ratios)})

    tps = lambda ms_list: [a.prompt / (m / 1e3) for m in ms_list]  # noqa: E731
    add("decode, batch 1, float32", col("ours", "float32", "decode_ms"),
        col("llama", "float32", "decode_ms"), "ms/token")
    add(f"prefill {a.prompt} tokens, float32, benchmark", tps(col("ours", "float32", "prefill_ms")),
        tps(col("llama", "float32", "prefill_ms")), "tokens/s", time_like=False)
    add(f"prefill {a.prompt} tokens, float32, end to end (TTFT)",
        [rd["ours"]["ttft_ms"] for rd in rounds], [rd["llama"]["ttft_ms"] for rd in rounds], "ms")
    add(f"prefill {a.prompt} tokens, bfloat16", col("ours", "bfloat16", "prefill_ms"),
        col("llama", "bfloat16", "prefill_ms"), "ms")
    add("decode, bfloat16 (llama.cpp bf16)", col("ours", "bfloat16", "decode_ms"),
        col("llama", "bfloat16", "decode_ms"), "ms/token")
    add("decode, bfloat16 (llama.cpp f16)", col("ours", "bfloat16", "decode_ms"),
        col("llama", "float16", "decode_ms"), "ms/token")
    add(f"prefill {a.prompt} tokens, float16 weights", col("ours", "float16", "prefill_ms"),
        col("llama", "float16", "prefill_ms"), "ms")
    add("decode, float16 weights (llama.cpp f16)", col("ours", "float16", "decode_ms"),
        col("llama", "float16", "decode_ms"), "ms/token")
    add(f"prefill {a.prompt} tokens, int8 (llama.cpp Q8_0)", col("ours", "int8", "prefill_ms"),
        col("llama", "int8", "prefill_ms"), "ms")
    add("decode, int8 (llama.cpp Q8_0)", col("ours", "int8", "decode_ms"),
        col("llama", "int8", "decode_ms"), "ms/token")
    add(f"decode, batch {a.batch}, bfloat16 (llama.cpp bf16), {a.batch_prompt}-token prompts",
        [rd["ours"]["batch"]["decode_tokens_per_s"] for rd in rounds],
        [rd["llama"]["batch"]["decode_tokens_per_s"] for rd in rounds], "tokens/s",
        time_like=False)
    int8_over_bf16 = [b / i for b, i in zip(col("ours", "bfloat16", "decode_ms"),
                                            col("ours", "int8", "decode_ms"))]
    result["table"] = table
    result["vlcache_int8_decode_over_bfloat16"] = ratio_stats(int8_over_bf16)

    lines = ["| measure | vlcache | llama.cpp | vlcache ÷ llama.cpp, median (min-max) |",
             "| --- | --- | --- | --- |"]
    for t in table:
        fmt = "{:.1f}" if t["unit"] != "ms/token" else "{:.2f}"
        lines.append(f"| {t['measure']} | {fmt.format(t['vlcache'])} {t['unit']} | "
                     f"{fmt.format(t['llama_cpp'])} {t['unit']} | {t['ratio']['median']:.2f} "
                     f"({t['ratio']['min']:.2f}-{t['ratio']['max']:.2f}) |")
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    s = result["shape"]
    md = "\n".join([
        BEGIN,
        f"Written by `make bench-peer` on {time.strftime('%Y-%m-%d')} ({cpu or platform.machine()}, "
        f"{s['threads']} threads). Shape: hidden {s['hidden']}, MLP {s['intermediate']}, "
        f"{s['layers']} layers, {s['heads']} heads ({s['kv_heads']} KV), vocabulary {s['vocab']}; "
        f"{s['prompt']}-token prompt, {s['steps']} decode steps after it. llama.cpp from "
        f"llama-cpp-python {peer.version} (build {result['llama_cpp_build']}). {s['rounds']} "
        f"rounds, the engines alternating; each figure is the median over rounds of a median of "
        f"{s['repeats']} repeats, each ratio the median (and range) of the per-round ratios. "
        f"Equal models: the same {result['check']['prompt_ids']} prompt ids and the same "
        f"{len(result['check']['greedy_tokens'])} greedy tokens from both in float32.",
        "",
        *lines,
        "",
        f"vlcache's int8 decode against its own bfloat16 decode, same rounds: "
        f"{result['vlcache_int8_decode_over_bfloat16']['median']:.2f}x "
        f"({result['vlcache_int8_decode_over_bfloat16']['min']:.2f}-"
        f"{result['vlcache_int8_decode_over_bfloat16']['max']:.2f}).",
        END])
    print(md)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    if a.markdown:
        doc = open(a.markdown).read()
        if BEGIN in doc and END in doc:
            doc = doc[:doc.index(BEGIN)] + md + doc[doc.index(END) + len(END):]
        else:
            doc = doc.rstrip("\n") + "\n\n## Against llama.cpp (`make bench-peer`)\n\n" + md + "\n"
        with open(a.markdown, "w") as f:
            f.write(doc)


if __name__ == "__main__":
    main()
