#!/usr/bin/env python3
"""Saturation curves of a vlcache-server under vlcache-loadtest sweeps.

Starts one vlcache-server (loopback, free ports) on --model with --server-args, then runs each
--case (a label and vlcache-loadtest arguments that include --rates) as a rate sweep, --repeat
times, the cases alternating so that every case sees the same machine. Writes every sweep's JSON
and PNG under --out and prints, per case, a Markdown table of offered against achieved rate with
p50/p99 TTFT and TPOT, accuracy, the server's time split, and the highest offered rate whose p99
TTFT and p99 TPOT meet --slo (median over the repeats).

  bench/load_curves.py --model models/demo --out /tmp/load \\
      --case "full|--workload video --frames 8 --kv-policy full --rates 2,4,8 --duration 20" \\
      --case "vlcache 0.1|--workload video --frames 8 --kv-policy vlcache --kv-budget 0.1 \\
              --rates 2,4,8 --duration 20" --slo-p99 ttft=2000,tpot=100
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys


def start_server(bin_dir, model, extra):
    args = [os.path.join(bin_dir, "vlcache-server"), "--model", model, "--listen", "127.0.0.1:0",
            "--metrics-listen", "127.0.0.1:0", "--log-level", "warn"] + extra
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("listening "):
            fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
            return proc, fields["grpc"], fields["metrics"]
    raise SystemExit("vlcache-server exited before serving: " + " ".join(args))


def highest_rate_within(runs, slo):
    """The highest offered rate up to which every run met the p99 objectives."""
    best = 0.0
    for r in sorted(runs, key=lambda r: r["request_rate"]):
        ok = r["failed"] == 0
        if "ttft" in slo:
            ok = ok and r["p99_ttft_ms"] <= slo["ttft"]
        if "tpot" in slo:
            ok = ok and r["p99_tpot_ms"] <= slo["tpot"]
        if not ok:
            break
        best = r["request_rate"]
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "bin"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--server-args", default="", help="extra vlcache-server arguments")
    ap.add_argument("--case", action="append", required=True, help="LABEL|LOADTEST ARGS")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--slo-p99", default="", help="ttft=MS,tpot=MS for the highest rate within")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    slo = {k: float(v) for k, v in (p.split("=") for p in a.slo_p99.split(",") if p)}
    cases = [c.split("|", 1) for c in a.case]
    proc, target, metrics = start_server(a.bin, a.model, shlex.split(a.server_args))
    results = {label: [] for label, _ in cases}
    try:
        for rep in range(a.repeat):
            for i, (label, args) in enumerate(cases):
                stem = os.path.join(a.out, f"case{i}-rep{rep}")
                cmd = [os.path.join(a.bin, "vlcache-loadtest"), "--target", target, "--metrics",
                       metrics, "--no-progress", "--json", stem + ".json", "--plot",
                       stem + ".png"] + shlex.split(args)
                print(f"# {label}, repeat {rep + 1}: {' '.join(shlex.quote(c) for c in cmd[1:])}",
                      file=sys.stderr, flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                with open(stem + ".json") as f:
                    results[label].append(json.load(f)["runs"])
    finally:
        proc.terminate()
        proc.wait()

    for label, args in cases:
        reps = results[label]
        print(f"\n{label}: `vlcache-loadtest {args}` ({len(reps)} sweep(s); medians over them)\n")
        print("| offered req/s | achieved req/s | p50 TTFT ms | p99 TTFT ms | p50 TPOT ms "
              "| p99 TPOT ms | accuracy | KV kept | queue / media / prefill / decode, server ms |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for k in range(len(reps[0])):
            rows = [rep[k] for rep in reps]
            med = lambda key: statistics.median(r[key] for r in rows)
            h = lambda name: statistics.median(
                r["server_histograms"][name]["mean_ms"] for r in rows)
            acc = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
            decode = statistics.median(
                r["server_histograms"]["vlcache_inter_token_latency_seconds"]["sum_s"] * 1e3 /
                max(1, r["server_histograms"]["vlcache_request_duration_seconds"]["count"])
                for r in rows)
            accuracy = f"{statistics.median(acc):.3f}" if acc else "-"
            print(f"| {rows[0]['request_rate']:g} | {med('request_throughput'):.2f} "
                  f"| {med('median_ttft_ms'):.0f} | {med('p99_ttft_ms'):.0f} "
                  f"| {med('median_tpot_ms'):.1f} | {med('p99_tpot_ms'):.1f} | {accuracy} "
                  f"| {med('kv_kept_fraction'):.3f} "
                  f"| {h('vlcache_queue_time_seconds'):.0f} / "
                  f"{h('vlcache_media_prepare_seconds'):.0f} / "
                  f"{h('vlcache_prefill_seconds'):.0f} / {decode:.0f} |")
        if slo:
            within = [highest_rate_within(rep, slo) for rep in reps]
            print(f"\nhighest offered rate with p99 within {a.slo_p99}: "
                  f"{statistics.median(within):g} req/s (repeats: {within})")


if __name__ == "__main__":
    main()
