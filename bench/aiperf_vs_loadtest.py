#!/usr/bin/env python3
"""NVIDIA's AIPerf and vlcache-loadtest on the same workload, the same concurrency and the same
server, alternated, so that each tool's figures can be read against the other's.

One vlcache-server serves both gRPC (vlcache-loadtest, vlcache.v1.Inference) and the Open
Inference Protocol's HTTP binding (AIPerf, Triton's generate_stream through its template
endpoint). Both tools send the same vlcache-vqa questions and pictures in a closed loop of
--concurrency for --requests requests, ask for --max-tokens tokens at temperature 0, and run
--repeat times each, alternating. Prints the median over the repeats of each figure with its
spread (min to max), in milliseconds; beside each tool's own figures, the server's mean TTFT and
inter-token gap over the same run (its /metrics histograms) and the CPU seconds the tool itself
used, which it took from the server on a shared machine.

  bench/aiperf_vs_loadtest.py --model /tmp/lt/big --concurrency 4 --requests 48 --repeat 5

AIPerf comes from the project's virtual environment (build/venv, made by `make deps`).
"""
import argparse
import http.client
import json
import threading
import time
import os
import statistics
import subprocess
import sys
import tempfile
import resource
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
import aiperf_workload  # noqa: E402


def start_server(bin_dir, model, extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLC_")}
    server = subprocess.Popen(
        [os.path.join(bin_dir, "vlcache-server"), "--model", model, "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--log-level", "warn"] + extra, stdout=subprocess.PIPE, text=True, env=env)
    for line in server.stdout:
        if line.startswith("listening "):
            return server, dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    server.kill()
    sys.exit("vlcache-server did not start")


def model_image_size(model):
    with open(os.path.join(model, "preprocessor_config.json")) as f:
        c = json.load(f)
    crop = c.get("crop_size", {})
    size = crop.get("height") if isinstance(crop, dict) else crop
    return max(size or 0, 48)  # vlcache-vqa's smallest (12-pixel cells); the server resizes


def server_sums(metrics):
    """(sum, count) of the server's TTFT and inter-token histograms, from its /metrics."""
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for name in ("vlcache_time_to_first_token_seconds", "vlcache_inter_token_latency_seconds"):
        for suffix in ("sum", "count"):
            for line in text.splitlines():
                if line.startswith(f"{name}_{suffix}"):
                    out[(name, suffix)] = float(line.rsplit(" ", 1)[1])
    return out


def measured(run, fields, *a):
    """Runs one tool's run and adds the server's own means over it and the client's CPU."""
    def cpu():  # the tools run as child processes, or (http.client) in this one
        return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_CHILDREN),
                                                     resource.getrusage(resource.RUSAGE_SELF)))
    before, cpu0 = server_sums(fields["metrics"]), cpu()
    r = run(*a)
    after, cpu1 = server_sums(fields["metrics"]), cpu()

    def mean_ms(name):
        n = after[(name, "count")] - before[(name, "count")]
        return 1e3 * (after[(name, "sum")] - before[(name, "sum")]) / n if n else 0.0
    r["server ttft mean"] = mean_ms("vlcache_time_to_first_token_seconds")
    r["server itl mean"] = mean_ms("vlcache_inter_token_latency_seconds")
    r["client cpu s"] = cpu1 - cpu0
    return r


def run_loadtest(args, fields, work, i):
    out = os.path.join(work, f"loadtest-{i}.json")
    subprocess.run([os.path.join(args.bin_dir, "vlcache-loadtest"), "--target", fields["grpc"],
                    "--workload-file", os.path.join(work, "items.jsonl"), "--rate", "0",
                    "--concurrency", str(args.concurrency), "--num-requests", str(args.requests),
                    "--max-new-tokens", str(args.max_tokens), "--temperature", "0",
                    "--json", out, "--no-progress"], check=True, capture_output=True)
    with open(out) as f:
        s = json.load(f)
    return {"ttft mean": s["mean_ttft_ms"], "ttft p50": s["median_ttft_ms"],
            "ttft p99": s["p99_ttft_ms"], "itl mean": s["mean_itl_ms"],
            "itl p50": s["median_itl_ms"], "tpot p50": s["median_tpot_ms"],
            "e2e p50": s["median_e2el_ms"], "tokens/request": s["total_output_tokens"] /
            max(1, s["completed"]), "failed": s["failed"]}


def run_aiperf(args, fields, work, i):
    out = os.path.join(work, f"aiperf-{i}")
    command = aiperf_workload.command(
        aiperf=args.aiperf, url=f"http://{fields['http']}", model=os.path.basename(args.model),
        work=work, tokenizer_model=os.path.join(args.model, "tokenizer.model"),
        requests=args.requests, concurrency=args.concurrency, max_tokens=args.max_tokens,
        out=out)
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"aiperf failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    with open(os.path.join(out, "profile_export_aiperf.json")) as f:
        s = json.load(f)
    return {"ttft mean": s["time_to_first_token"]["avg"],
            "ttft p50": s["time_to_first_token"]["p50"], "ttft p99": s["time_to_first_token"]["p99"],
            "itl mean": s["inter_token_latency"]["avg"],
            "chunk gap mean": s["inter_chunk_latency"]["avg"],
            "itl p50": s["inter_token_latency"]["p50"],
            "chunk gap p50": s["inter_chunk_latency"]["p50"],
            "e2e p50": s["request_latency"]["p50"],
            "tokens/request": s["output_sequence_length"]["avg"],
            "failed": len(s.get("error_summary") or [])}


def run_plain_http(args, fields, work, i):
    """The same closed loop over generate_stream from a minimal client (the standard library's
    http.client, one thread and one kept-alive connection per slot): the HTTP path's latencies
    without a load generator's own CPU load."""
    with open(os.path.join(work, "aiperf.jsonl")) as f:
        items = [json.loads(line) for line in f]
    host, port = fields["http"].rsplit(":", 1)
    path = f"/v2/models/{os.path.basename(args.model)}/generate_stream"
    lock, next_index, records = threading.Lock(), [0], []

    def worker():
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        while True:
            with lock:
                if next_index[0] >= args.requests:
                    break
                item = items[next_index[0] % len(items)]
                next_index[0] += 1
            body = json.dumps({"text_input": item["text"], "image": [item["image"]],
                               "parameters": {"max_tokens": args.max_tokens, "temperature": 0}})
            start = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            stamps = []
            while True:
                line = r.readline()
                if not line:
                    break
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if event.get("text_output"):
                        stamps.append(time.perf_counter())
            end = time.perf_counter()
            with lock:
                records.append((start, stamps, end, r.status))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [rec for rec in records if rec[3] == 200 and rec[1]]
    ttft = [1e3 * (s[0] - start) for start, s, _, _ in ok]
    gaps = [1e3 * (b - a) for _, s, _, _ in ok for a, b in zip(s, s[1:])]
    e2e = [1e3 * (end - start) for start, _, end, _ in ok]
    pct = lambda v, q: sorted(v)[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return {"ttft mean": statistics.mean(ttft), "ttft p50": statistics.median(ttft),
            "ttft p99": pct(ttft, 0.99), "chunk gap p50": statistics.median(gaps),
            "chunk gap mean": statistics.mean(gaps), "e2e p50": statistics.median(e2e),
            "failed": len(records) - len(ok)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "bin"))
    p.add_argument("--aiperf", default=os.path.join(ROOT, "build", "venv", "bin", "aiperf"))
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--server-args", default="", help="extra vlcache-server flags")
    p.add_argument("--out", default=None, help="keep every run's output here")
    args = p.parse_args()
    args.model = os.path.abspath(args.model)
    work = args.out or tempfile.mkdtemp(prefix="vlc-aiperf-bench-")
    os.makedirs(work, exist_ok=True)
    aiperf_workload.make_items(os.path.join(args.bin_dir, "vlcache-vqa"), work, args.requests,
                               image_size=model_image_size(args.model))
    server, fields = start_server(args.bin_dir, args.model, args.server_args.split())
    runs = {"vlcache-loadtest (gRPC)": [], "AIPerf (HTTP generate_stream)": [],
            "http.client (HTTP generate_stream)": []}
    try:
        # One unmeasured run of each warms the server (allocator, caches, connections).
        run_loadtest(args, fields, work, "warm")
        run_aiperf(args, fields, work, "warm")
        run_plain_http(args, fields, work, "warm")
        for i in range(args.repeat):
            runs["vlcache-loadtest (gRPC)"].append(measured(run_loadtest, fields, args, fields,
                                                            work, i))
            runs["AIPerf (HTTP generate_stream)"].append(measured(run_aiperf, fields, args, fields,
                                                                  work, i))
            runs["http.client (HTTP generate_stream)"].append(
                measured(run_plain_http, fields, args, fields, work, i))
            print(f"repeat {i + 1}/{args.repeat} done", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=60)
    keys = ["ttft p50", "ttft p99", "itl p50", "chunk gap p50", "tpot p50", "e2e p50",
            "tokens/request", "failed", "ttft mean", "server ttft mean", "itl mean",
            "chunk gap mean", "server itl mean", "client cpu s"]
    print(f"model {args.model}, concurrency {args.concurrency}, {args.requests} requests, "
          f"{args.max_tokens} tokens asked, {args.repeat} alternated repeats: median [min, max]\n")
    print("| tool | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for tool, rs in runs.items():
        cells = []
        for k in keys:
            values = [r[k] for r in rs if k in r]
            if not values:
                cells.append("-")
            else:
                cells.append(f"{statistics.median(values):.1f} [{min(values):.1f}, {max(values):.1f}]")
        print(f"| {tool} | " + " | ".join(cells) + " |")
    print(f"\nruns kept in {work}")


if __name__ == "__main__":
    main()
