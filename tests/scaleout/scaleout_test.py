#!/usr/bin/env python3
"""Three vlcache-server replicas on loopback behind Debian's nginx with the project's proxy
configuration (deploy/proxy), sharing a session store, driven by vlcache-loadtest with one-shot
requests and multi-turn sessions.

- Affinity: every call on a session reaches the replica that holds it (no replica misses a
  session lookup, none restores one), and the one-shot requests spread.
- kill -9 of a replica under load: the calls it was serving end UNAVAILABLE (or, mid-answer, reset
  by the proxy) and the one-shot requests among them succeed on retry elsewhere; its sessions are gone, and their calls say so (NOT_FOUND naming the
  store); nothing else fails, and the surviving replicas answer nothing but OK and that NOT_FOUND.
- SIGTERM of a replica under load: its calls in flight finish, it saves its sessions, the others
  continue them, and no call fails at all.

Run by ctest with VLC_BIN_DIR set; each case starts its own replicas and proxy.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("VLC_BIN_DIR", os.path.join(ROOT, "build", "bin"))
# A random checkpoint a little larger than the tests' tiny ones: its greedy answers run to
# max_new_tokens (about 0.1 s a request here), so that a replica stopped under load has calls in
# flight. Made once per run by vlcache-make-tiny.
MODEL_ARGS = ["--seed", "3", "--text-hidden", "256", "--text-intermediate", "512",
              "--text-layers", "4"]
sys.path.insert(0, os.path.join(ROOT, "deploy", "proxy"))
import render_nginx  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(address):
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return r.read().decode()


def samples(text, name):
    """{labels: value} of one metric family's series."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            out[labels] = float(value)
    return out


def gauge(text, name):
    """A series without labels."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def count(text, name, **labels):
    return sum(v for k, v in samples(text, name).items()
               if all(f'{lk}="{lv}"' in k for lk, lv in labels.items()))


class Replicas:
    """Three servers and the proxy in front of them, in a temporary folder."""

    def __init__(self, model, n=3):
        self.dir = tempfile.mkdtemp(prefix="vlc-scaleout-")
        self.store = os.path.join(self.dir, "sessions")
        self.servers = []
        for i in range(n):
            err = open(os.path.join(self.dir, f"server{i}.log"), "w")
            p = subprocess.Popen(
                [os.path.join(BIN, "vlcache-server"), "--model", model, "--listen", "127.0.0.1:0",
                 "--metrics-listen", "127.0.0.1:0", "--session-store", self.store,
                 "--drain-timeout", "20"],
                stdout=subprocess.PIPE, stderr=err, text=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("VLC_")})
            self.servers.append({"process": p, "log": err})
        for s in self.servers:
            for line in s["process"].stdout:
                if line.startswith("listening "):
                    fields = dict(f.split("=", 1) for f in line.split()[1:])
                    s["grpc"], s["metrics"] = fields["grpc"], fields["metrics"]
                    break
            if "grpc" not in s:
                self.close()
                raise AssertionError("a replica did not start")
        self.proxy = f"127.0.0.1:{free_port()}"
        prefix = os.path.join(self.dir, "nginx")
        os.makedirs(prefix)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(render_nginx.render(self.proxy, [s["grpc"] for s in self.servers], prefix))
        self.nginx = subprocess.Popen(
            ["nginx", "-e", os.path.join(prefix, "error.log"), "-c", conf, "-g", "daemon off;"],
            stderr=subprocess.DEVNULL)
        for _ in range(200):  # bounded: until the proxy accepts connections
            try:
                socket.create_connection(tuple(self.proxy.rsplit(":", 1)), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)

    def loadtest(self, *args, background=False):
        out = os.path.join(self.dir, f"loadtest-{time.monotonic_ns()}")
        cmd = [os.path.join(BIN, "vlcache-loadtest"), "--target", self.proxy,
               "--json", out + ".json", "--records", out + ".jsonl", "--no-progress", *args]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if background:
            return p, out
        return self.result(p, out)

    @staticmethod
    def result(p, out, timeout=300):
        _, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise AssertionError(f"vlcache-loadtest failed: {err[-2000:]}")
        with open(out + ".json") as f:
            summary = json.load(f)
        with open(out + ".jsonl") as f:
            records = [json.loads(line) for line in f if line.strip()]
        return summary, records

    def wait_until_busy(self, i, limit=30):
        """Bounded polling until replica `i` holds a session and runs a request."""
        give_up = time.monotonic() + limit
        while time.monotonic() < give_up:
            m = metrics(self.servers[i]["metrics"])
            if (gauge(m, "vlcache_sessions_active") >= 1 and
                    gauge(m, "vlcache_requests_running") >= 1):
                return True
            time.sleep(0.01)
        return False

    def close(self):
        if getattr(self, "nginx", None):
            self.nginx.terminate()
            self.nginx.wait(timeout=30)
        for s in self.servers:
            p = s["process"]
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            p.stdout.close()
            s["log"].close()
        shutil.rmtree(self.dir, ignore_errors=True)


MIX = ["--workload", "image:1,session:2", "--turns", "3", "--rate", "0",
       "--max-new-tokens", "48", "--retries", "10"]


class ScaleOut(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model_dir = tempfile.mkdtemp(prefix="vlc-scaleout-model-")
        subprocess.run([os.path.join(BIN, "vlcache-make-tiny"), "--out", cls.model_dir,
                        *MODEL_ARGS], check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.model_dir, ignore_errors=True)

    def setUp(self):
        self.r = Replicas(self.model_dir)

    def tearDown(self):
        self.r.close()

    def test_affinity(self):
        summary, records = self.r.loadtest(*MIX, "--concurrency", "4", "--num-requests", "45")
        self.assertEqual(summary["failed"], 0, summary["failed_by_code"])
        self.assertTrue(all(rec["code"] == "OK" for rec in records))
        sessions = summary["calls_by_method"]["CreateSession"]["OK"]
        turns = summary["calls_by_method"]["SessionGenerate"]["OK"]
        self.assertGreater(sessions, 5)
        created = served_turns = 0
        one_shot = []
        for s in self.r.servers:
            m = metrics(s["metrics"])
            # Every turn and deletion found its session where it was sent: no miss, no restore.
            self.assertEqual(count(m, "vlcache_session_lookups_total", result="miss"), 0)
            self.assertEqual(count(m, "vlcache_session_moves_total", result="restored"), 0)
            hits = count(m, "vlcache_session_lookups_total", result="hit")
            here = count(m, "vlcache_requests_total", method="SessionGenerate", code="OK")
            deleted = count(m, "vlcache_requests_total", method="DeleteSession", code="OK")
            self.assertEqual(hits, here + deleted)
            created += count(m, "vlcache_requests_total", method="CreateSession", code="OK")
            served_turns += here
            one_shot.append(count(m, "vlcache_requests_total", method="Generate", code="OK"))
        self.assertEqual((created, served_turns), (sessions, turns))
        # One-shot requests spread over the replicas (hashed on their request ids).
        self.assertEqual(sum(one_shot), summary["calls_by_method"]["Generate"]["OK"])
        self.assertGreaterEqual(sum(1 for n in one_shot if n > 0), 2, one_shot)

    def test_kill_9_under_load(self):
        p, out = self.r.loadtest(*MIX, "--concurrency", "6", "--duration", "8", "--think-time",
                                 "0.2", background=True)
        victim = 1
        self.assertTrue(self.r.wait_until_busy(victim), "the victim never held work")
        self.r.servers[victim]["process"].send_signal(signal.SIGKILL)
        summary, records = self.r.result(p, out)
        # Calls in flight on the victim ended UNAVAILABLE (or reset by the proxy) and were sent
        # again; the sessions it held are gone.
        self.assertGreater(summary["calls_retried"], 0)
        failures = [rec for rec in records if rec["code"] != "OK"]
        self.assertGreater(len(failures), 0)
        for rec in failures:
            # Only the victim's sessions fail, and they say why.
            self.assertIn(rec["method"], ("SessionGenerate", "DeleteSession"), rec)
            self.assertEqual(rec["code"], "NOT_FOUND", rec)
            self.assertIn("session store has no snapshot", rec["error"], rec)
        # The victim's one-shot requests (and creations) were retried elsewhere and succeeded.
        self.assertTrue(all(rec["code"] == "OK" for rec in records
                            if rec["method"] in ("Generate", "CreateSession")))
        self.assertGreater(summary["completed"], 0)
        # The survivors answered nothing but OK and the victim's gone sessions.
        for i, s in enumerate(self.r.servers):
            if i == victim:
                continue
            codes = samples(metrics(s["metrics"]), "vlcache_requests_total")
            bad = {k: v for k, v in codes.items()
                   if v > 0 and 'code="OK"' not in k and 'code="NOT_FOUND"' not in k}
            self.assertEqual(bad, {})

    def test_sigterm_under_load(self):
        p, out = self.r.loadtest(*MIX, "--concurrency", "6", "--duration", "8", "--think-time",
                                 "0.2", background=True)
        victim = 0
        self.assertTrue(self.r.wait_until_busy(victim), "the victim never held work")
        stopping = self.r.servers[victim]
        stopping["process"].send_signal(signal.SIGTERM)
        self.assertEqual(stopping["process"].wait(timeout=60), 0)
        summary, records = self.r.result(p, out)
        self.assertEqual(summary["failed"], 0, summary["failed_by_code"])
        self.assertTrue(all(rec["code"] == "OK" for rec in records),
                        [rec for rec in records if rec["code"] != "OK"][:3])
        # Every snapshot the victim handed over (saved, less what it took back itself: a call
        # it had admitted before the signal may find its session saved already) either continued
        # on a survivor (restored), was deleted by its client while in the store (dropped), or
        # waits there.
        with open(os.path.join(self.r.dir, "server0.log")) as f:
            log = f.read()
        handed_over = (log.count("event=session_saved") - log.count("event=session_restored") -
                       log.count("event=session_dropped"))
        moves = {"restored": 0, "dropped": 0}
        for i, s in enumerate(self.r.servers):
            if i != victim:
                for result in moves:
                    moves[result] += count(metrics(s["metrics"]), "vlcache_session_moves_total",
                                           result=result)
        left = [f for f in os.listdir(self.r.store) if f.endswith(".vlcsnap")]
        self.assertGreater(handed_over, 0, "the victim held sessions when it stopped")
        self.assertGreater(moves["restored"], 0, "a saved session continued elsewhere")
        self.assertEqual(moves["restored"] + moves["dropped"] + len(left), handed_over)


if __name__ == "__main__":
    unittest.main(verbosity=2)
