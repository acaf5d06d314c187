"""NVIDIA's AIPerf against vlcache's HTTP binding: the workload files and the command line, shared
by tests/oip/aiperf_test.py and bench/aiperf_vs_loadtest.py.

AIPerf speaks HTTP; its template endpoint renders each request from a Jinja template, so it drives
Triton's generate_stream (POST /v2/models/<name>/generate_stream, server-sent events) with no
plugin: `text_input` from the dataset's text, `image` from its pictures (data URLs, which AIPerf
sends as they are), and `text_output` read from every event.
"""
import base64
import json
import os
import subprocess

TEMPLATE = ('{"text_input": {{ text|tojson }}, "image": {{ images|tojson }}, '
            '"parameters": {"max_tokens": %d, "temperature": 0}}')


def make_items(vqa_bin, work, n, image_size=None, split="test"):
    """Writes `n` vlcache-vqa items to `work` (PNG files and items.jsonl, which vlcache-loadtest
    reads as a workload file) and the same questions and pictures as AIPerf's single_turn dataset
    (work/aiperf.jsonl, the pictures inline as data URLs). Returns the items, each with
    `image_b64`."""
    args = [vqa_bin, "--split", split, "--n", str(n), "--out", work]
    if image_size:
        args += ["--image-size", str(image_size)]
    subprocess.run(args, check=True, capture_output=True)
    items = []
    with open(os.path.join(work, "items.jsonl")) as f:
        items = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(work, "aiperf.jsonl"), "w") as out:
        for it in items:
            with open(os.path.join(work, it["images"][0]), "rb") as png:
                it["image_b64"] = base64.b64encode(png.read()).decode()
            out.write(json.dumps({"text": it["prompt"],
                                  "image": "data:image/png;base64," + it["image_b64"]}) + "\n")
    return items


def tokenizer_dir(tokenizer_model, work):
    """A Hugging Face tokenizer directory for the model's SentencePiece tokenizer.model (AIPerf
    counts output tokens with it), made in `work`."""
    d = os.path.join(work, "tokenizer")
    os.makedirs(d, exist_ok=True)
    with open(tokenizer_model, "rb") as src, open(os.path.join(d, "tokenizer.model"), "wb") as dst:
        dst.write(src.read())
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
                   "add_eos_token": False}, f)
    return d


def command(aiperf, url, model, work, tokenizer_model, requests, concurrency, max_tokens, out,
            raw=False):
    """The aiperf profile command line for a closed loop of `concurrency` over `requests`."""
    template = os.path.join(work, "generate_stream.json.j2")
    with open(template, "w") as f:
        f.write(TEMPLATE % max_tokens)
    args = [aiperf, "profile", "--model", model, "--url", url,
            "--endpoint-type", "template",
            "--custom-endpoint", f"/v2/models/{model}/generate_stream", "--streaming",
            "--extra-inputs", f"payload_template:{template}",
            "--extra-inputs", "response_field:text_output",
            "--input-file", os.path.join(work, "aiperf.jsonl"),
            "--custom-dataset-type", "single_turn",
            "--request-count", str(requests), "--concurrency", str(concurrency),
            "--tokenizer", tokenizer_dir(tokenizer_model, work),
            "--artifact-dir", out, "--ui-type", "none"]
    if raw:
        args += ["--export-level", "raw"]
    return args
