#!/usr/bin/env python3
"""Replicas on this machine: throughput behind the proxy with 1, 2 and 3 replicas, the time a
session move adds to the next turn, and a session snapshot's size against the full cache's.

  bench/replicas.py --model /tmp/lt/big --repeat 3

- Throughput: N replicas (N = 1, 2, 3, alternated --repeat times) behind nginx with the project's
  configuration (deploy/proxy), a closed loop of vlcache-loadtest (--concurrency, one-shot
  requests and sessions) through it; request throughput and TTFT. All replicas share the
  machine's cores, so more replicas add no compute here: what the figure shows is the cost of
  the proxy and of splitting the cores.
- Move: a session on replica A and an identical one on replica B each answer a first turn; A is
  stopped (SIGTERM: it saves its session) and B answers the second turn of both, alternating
  which goes first; the difference of their times to first token is what the move added (B
  restores the moved one from the store). Repeated --moves times.
- Size: the snapshot's bytes against the uncompressed cache's bytes of the same session, for the
  full cache and VL-Cache at 10%, after an opening with --frames pictures and three turns.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "deploy", "proxy"))
import render_nginx  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, args, model, store, extra=()):
        self.log = open(os.path.join(store, f"server-{time.monotonic_ns()}.log"), "w")
        self.p = subprocess.Popen(
            [os.path.join(args.bin_dir, "vlcache-server"), "--model", model, "--listen",
             "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--session-store",
             os.path.join(store, "sessions"), *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("VLC_")})
        for line in self.p.stdout:
            if line.startswith("listening "):
                fields = dict(f.split("=", 1) for f in line.split()[1:])
                self.grpc = fields["grpc"]
                return
        sys.exit("vlcache-server did not start")

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=120)
        self.p.stdout.close()
        self.log.close()
        with open(self.log.name) as f:
            return f.read()


def cli(args, *argv):
    r = subprocess.run([os.path.join(args.bin_dir, "vlcache-cli"), *argv], capture_output=True,
                       text=True, check=True)
    return r.stdout


def throughput(args, model, work):
    results = {n: [] for n in (1, 2, 3)}
    for rep in range(args.repeat):
        for n in (1, 2, 3):
            servers = [Server(args, model, work) for _ in range(n)]
            prefix = tempfile.mkdtemp(dir=work)
            proxy = f"127.0.0.1:{free_port()}"
            conf = os.path.join(prefix, "nginx.conf")
            with open(conf, "w") as f:
                f.write(render_nginx.render(proxy, [s.grpc for s in servers], prefix))
            nginx = subprocess.Popen(["nginx", "-e", os.path.join(prefix, "error.log"), "-c", conf,
                                      "-g", "daemon off;"], stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            out = os.path.join(prefix, "lt.json")
            subprocess.run([os.path.join(args.bin_dir, "vlcache-loadtest"), "--target", proxy,
                            "--workload", args.workload, "--rate", "0", "--concurrency",
                            str(args.concurrency), "--num-requests", str(args.requests),
                            "--max-new-tokens", str(args.max_new_tokens), "--frames",
                            str(args.frames), "--retries", "5", "--json", out, "--no-progress"],
                           check=True, capture_output=True)
            with open(out) as f:
                s = json.load(f)
            results[n].append({"rps": s["request_throughput"], "ttft": s["median_ttft_ms"],
                               "failed": s["failed"]})
            nginx.terminate()
            nginx.wait()
            for srv in servers:
                srv.stop()
            print(f"throughput repeat {rep + 1}: {n} replica(s) {s['request_throughput']:.2f} req/s",
                  file=sys.stderr)
    print(f"\n### Throughput behind nginx ({args.workload}, concurrency {args.concurrency}, "
          f"{args.requests} requests, {args.repeat} alternated repeats: median [min, max])\n")
    print("| replicas | requests/s | p50 TTFT ms | failed |")
    print("| --- | --- | --- | --- |")
    base = statistics.median(r["rps"] for r in results[1])
    for n, rs in results.items():
        rps = [r["rps"] for r in rs]
        ttft = [r["ttft"] for r in rs]
        print(f"| {n} | {statistics.median(rps):.2f} [{min(rps):.2f}, {max(rps):.2f}] "
              f"({statistics.median(rps) / base:.2f}x) | {statistics.median(ttft):.0f} "
              f"[{min(ttft):.0f}, {max(ttft):.0f}] | {sum(r['failed'] for r in rs)} |")


def turn_ttft(args, target, session, prompt):
    out = json.loads(cli(args, "session", "ask", "--target", target, "--id", session, "--prompt",
                         prompt, "--max-new-tokens", "8", "--json"))
    return out["ttft_seconds"] * 1e3, out


def move(args, model, work, media):
    added, restore_ms = [], []
    for rep in range(args.moves):
        a, b = Server(args, model, work), Server(args, model, work)
        moved = cli(args, "session", "create", "--target", a.grpc, *media).strip()
        stays = cli(args, "session", "create", "--target", b.grpc, *media).strip()
        turn_ttft(args, a.grpc, moved, "what is at row 1 column 1?")
        turn_ttft(args, b.grpc, stays, "what is at row 1 column 1?")
        a.stop()
        order = [(moved, "moved"), (stays, "stays")]
        if rep % 2:
            order.reverse()
        t = {}
        for session, name in order:
            t[name], _ = turn_ttft(args, b.grpc, session, "what color is the triangle?")
        log = b.stop()
        for line in log.splitlines():
            if "event=session_restored" in line:
                restore_ms.append(float(line.rsplit("ms=", 1)[1].split()[0]))
        added.append(t["moved"] - t["stays"])
        print(f"move repeat {rep + 1}: moved {t['moved']:.1f} ms, stayed {t['stays']:.1f} ms",
              file=sys.stderr)
    print(f"\n### Time a move adds to the next turn ({args.moves} moves)\n")
    print(f"TTFT of the moved session's turn minus the staying one's, on the same replica: median "
          f"{statistics.median(added):.1f} ms [{min(added):.1f}, {max(added):.1f}]; the restore "
          f"itself (taking the snapshot, reading it, writing its pages), from the server's log: "
          f"median {statistics.median(restore_ms):.1f} ms [{min(restore_ms):.1f}, "
          f"{max(restore_ms):.1f}]")


def size(args, model, work, media):
    print("\n### Snapshot size against the full cache\n")
    print("| policy | snapshot bytes | full cache bytes | ratio |")
    print("| --- | --- | --- | --- |")
    for policy, budget in (("full", None), ("vlcache", "0.1")):
        srv = Server(args, model, work)
        create = ["session", "create", "--target", srv.grpc, *media, "--kv-policy", policy]
        if budget:
            create += ["--kv-budget", budget]
        sid = cli(args, *create).strip()
        for q in ("what is at row 1 column 1?", "what color is the triangle?",
                  "how many red shapes are there?"):
            turn_ttft(args, srv.grpc, sid, q)
        info = json.loads(cli(args, "session", "get", "--target", srv.grpc, "--id", sid, "--json"))
        srv.stop()
        path = os.path.join(work, "sessions", sid + ".vlcsnap")
        snap = os.path.getsize(path)
        os.remove(path)
        full = int(info["kv_bytes_full"])
        print(f"| {policy}{'' if budget is None else ' ' + budget} | {snap} | {full} | "
              f"{snap / full:.3f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "bin"))
    p.add_argument("--workload", default="image:1,session:1")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--requests", type=int, default=60)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--frames", type=int, default=8, help="pictures of a session's opening")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--moves", type=int, default=10)
    p.add_argument("--only", choices=["throughput", "move", "size"], action="append")
    args = p.parse_args()
    model = os.path.abspath(args.model)
    work = tempfile.mkdtemp(prefix="vlc-replicas-")
    image = os.path.join(work, "picture.png")
    shutil.copy(os.path.join(ROOT, "models", "demo", "example.png"), image)
    media = [x for _ in range(args.frames) for x in ("--image", image)]
    try:
        for part, fn in (("throughput", lambda: throughput(args, model, work)),
                         ("move", lambda: move(args, model, work, media)),
                         ("size", lambda: size(args, model, work, media))):
            if not args.only or part in args.only:
                fn()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
