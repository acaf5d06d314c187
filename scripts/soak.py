#!/usr/bin/env python3
"""A bounded soak under churn (`make soak`): the real server with a small KV pool, a short
session TTL and a few session slots, driven by vlcache-loadtest for --seconds (600 by default)
with mixed traffic (pictures, videos, sessions), client cancellations, deadlines that expire
mid-answer, sessions abandoned to the TTL and to eviction, and broken requests mixed in.

It warms up first (--warmup seconds of the same traffic), waits until the server is idle (no
request running, every session expired, its idle heap trim done) and takes the idle figures;
after the soak it waits until idle again and fails unless:
  - the KV page pool is back to its idle use (0: every page free);
  - resident memory grew less than 5% over the idle figure after warm-up;
  - open file descriptors and threads are back to their idle counts;
  - every call got its answer or a documented code: OK; CANCELLED and DEADLINE_EXCEEDED only for
    the calls cancelled or given a short deadline; INVALID_ARGUMENT only for the broken ones;
    RESOURCE_EXHAUSTED (queue full); NOT_FOUND only for session calls (evicted or expired);
  - the server still reports SERVING and answers a correct request correctly.
Prints the figures (and with --json, writes them).

  scripts/soak.py --seconds 600 --json build/soak.json
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def thread_names(pid):
    """How many threads of each name (/proc/PID/task/*/comm), to say whose a new thread is."""
    names = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        names[name] = names.get(name, 0) + 1
    return dict(sorted(names.items()))


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {"rss_kb": int(fields["VmRSS"].split()[0]),
            "anon_kb": int(fields["RssAnon"].split()[0]),
            "file_kb": int(fields["RssFile"].split()[0]), "threads": int(fields["Threads"]),
            "thread_names": thread_names(pid),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def gauge(metrics, name):
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def wait_idle(metrics, trim_seconds, limit=120):
    """Bounded polling until nothing runs or waits and every session has expired; then past the
    server's --heap-trim-idle, so that both figures are taken after its idle trim."""
    give_up = time.monotonic() + limit
    while time.monotonic() < give_up:
        if (gauge(metrics, "vlcache_requests_running") == 0 and
                gauge(metrics, "vlcache_queue_depth") == 0 and
                gauge(metrics, "vlcache_sessions_active") == 0):
            time.sleep(trim_seconds + 1)  # and gRPC's idle threads settle
            return True
        time.sleep(0.2)
    return False


def loadtest(args, target, seconds, out, watch_pid=None):
    """Runs the churn traffic; returns its summary, its records and the peak RSS (kB) seen."""
    cmd = [os.path.join(args.bin_dir, "vlcache-loadtest"), "--target", target,
           "--workload", "image:3,video:1,session:2", "--frames", "4", "--turns", "3",
           "--think-time", "0.05", "--rate", "0", "--concurrency", str(args.concurrency),
           "--duration", str(seconds), "--max-new-tokens", "16",
           "--cancel-fraction", "0.1", "--short-deadline-fraction", "0.1",
           "--abandon-fraction", "0.3", "--bad-fraction", "0.05", "--churn-delay-ms", "40",
           "--records", out + ".jsonl", "--json", out + ".json", "--no-progress"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while p.poll() is None:
        if watch_pid:
            peak = max(peak, proc_status(watch_pid)["rss_kb"])
        time.sleep(1)
    err = p.stderr.read()
    p.stderr.close()
    if p.returncode != 0:
        raise RuntimeError(f"vlcache-loadtest failed: {err[-2000:]}")
    with open(out + ".json") as f:
        summary = json.load(f)
    with open(out + ".jsonl") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return summary, records, peak


def unexpected(records):
    """Calls whose code is not among the documented answers for what they were."""
    bad = []
    for r in records:
        code, churn, method = r["code"], r.get("churn", ""), r["method"]
        ok = code in ("OK", "RESOURCE_EXHAUSTED")
        ok |= code == "CANCELLED" and churn == "cancel"
        ok |= code == "DEADLINE_EXCEEDED" and churn == "deadline"
        ok |= code == "INVALID_ARGUMENT" and churn == "bad"
        ok |= code == "NOT_FOUND" and method in ("SessionGenerate", "DeleteSession")
        if churn == "bad":
            ok = code == "INVALID_ARGUMENT"
        if not ok:
            bad.append(r)
    return bad


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--warmup", type=float, default=60)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "bin"))
    p.add_argument("--thread-settle", type=float, default=30,
                   help="seconds the thread count may take to return to its idle value")
    p.add_argument("--heap-trim-idle", type=float, default=5,
                   help="the server's --heap-trim-idle in seconds (its default, 5); 0: off")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="vlc-soak-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLC_")}
    server = subprocess.Popen(
        [os.path.join(args.bin_dir, "vlcache-server"), "--model", args.model, "--listen",
         "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--kv-cache-bytes", "4MiB",
         "--session-ttl-seconds", "2", "--max-sessions", "8", "--max-queue", "16",
         "--heap-trim-idle", f"{args.heap_trim_idle}s",
         "--log-level", "warn"], stdout=subprocess.PIPE, text=True, env=env)
    addr = {}
    for line in server.stdout:
        if line.startswith("listening "):
            addr = dict(f.split("=", 1) for f in line.split()[1:])
            break
    failures = []
    figures = {}
    try:
        if not addr:
            sys.exit("soak: the server did not start")
        loadtest(args, addr["grpc"], args.warmup, os.path.join(work, "warmup"))
        if not wait_idle(addr["metrics"], args.heap_trim_idle):
            failures.append("the server did not become idle after the warm-up")
        idle = proc_status(server.pid)
        figures["idle_after_warmup"] = idle
        figures["kv_usage_idle"] = gauge(addr["metrics"], "vlcache_kv_cache_usage_ratio")
        t0 = time.monotonic()
        summary, records, peak_rss = loadtest(args, addr["grpc"], args.seconds,
                                              os.path.join(work, "soak"), server.pid)
        figures["soak_seconds"] = round(time.monotonic() - t0, 1)
        if not wait_idle(addr["metrics"], args.heap_trim_idle):
            failures.append("the server did not become idle after the soak")
        # gRPC's synchronous server grows its thread pool under load and retires the extra
        # threads only as each next times out in its poll: bounded polling until the count is
        # back, so that a thread still retiring is told from one that stays.
        settle = time.monotonic()
        end = proc_status(server.pid)
        while (end["thread_names"] != idle["thread_names"] and
               time.monotonic() - settle < args.thread_settle):
            time.sleep(0.5)
            end = proc_status(server.pid)
        figures["threads_settled_after_s"] = round(time.monotonic() - settle, 1)
        figures["idle_after_soak"] = end
        figures["kv_usage_after"] = gauge(addr["metrics"], "vlcache_kv_cache_usage_ratio")
        figures["calls"] = len(records)
        figures["calls_by_method"] = summary["calls_by_method"]
        figures["churn_by_code"] = summary["churn_by_code"]
        figures["sessions_abandoned"] = summary["sessions_abandoned"]
        figures["rss_growth"] = round(end["rss_kb"] / idle["rss_kb"] - 1, 4)
        figures["peak_rss_kb_under_load"] = peak_rss
        if figures["kv_usage_after"] != figures["kv_usage_idle"]:
            failures.append(f"KV pool use {figures['kv_usage_after']} after the soak, "
                            f"{figures['kv_usage_idle']} before")
        if figures["rss_growth"] >= 0.05:
            failures.append(f"resident memory grew {figures['rss_growth']:.1%}")
        for what in ("fds", "threads"):
            if end[what] != idle[what]:
                failures.append(f"{what}: {end[what]} after the soak, {idle[what]} idle before")
        if end["thread_names"] != idle["thread_names"]:
            failures.append(f"threads by name: {end['thread_names']} after the soak, "
                            f"{idle['thread_names']} idle before")
        odd = unexpected(records)
        if odd:
            failures.append(f"{len(odd)} calls got an undocumented answer, e.g. {odd[:3]}")
        # Still serving: health, and a correct answer to a known question.
        health = subprocess.run(
            [os.path.join(args.bin_dir, "vlcache-cli"), "generate", "--target", addr["grpc"],
             "--image", os.path.join(ROOT, "models", "demo", "example.png"), "--prompt",
             "what color is the triangle?"], capture_output=True, text=True)
        figures["answer_after"] = health.stdout.strip()
        if health.returncode != 0 or (args.model.endswith("demo") and
                                      health.stdout.strip() != "red"):
            failures.append(f"the server did not answer correctly after the soak: "
                            f"{health.stdout.strip()!r} {health.stderr.strip()!r}")
    finally:
        server.terminate()
        server.wait(timeout=60)
        server.stdout.close()
        shutil.rmtree(work, ignore_errors=True)
    figures["failures"] = failures
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    if failures:
        print("soak: FAILED: " + "; ".join(failures), file=sys.stderr)
        sys.exit(1)
    print("soak: passed", file=sys.stderr)


if __name__ == "__main__":
    main()
