#!/usr/bin/env python3
"""Bearer tokens are never written anywhere: not to the server's logs (text or JSON, at the most
verbose level), its /metrics page, --check-config's report, the answers a client gets (a wrong
token is not echoed back), the session snapshots it saves on SIGTERM, nor the data-quality
history its self-watch keeps. Tokens come from a file (--auth-token-file, a mounted secret) and
from VLC_AUTH_TOKEN; right and wrong ones are sent over gRPC and HTTP.

Run by ctest with VLC_BIN_DIR set; Debian's python3-grpcio on the project's generated stubs.
"""
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("VLC_BIN_DIR", os.path.join(ROOT, "build", "bin"))
sys.path.insert(0, os.path.join(os.path.dirname(BIN), "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "oip"))
import grpc  # noqa: E402
import server_process  # noqa: E402
from vlcache.v1 import inference_pb2 as pb  # noqa: E402
from vlcache.v1 import inference_pb2_grpc as pb_grpc  # noqa: E402

MODEL = server_process.DEMO
with open(os.path.join(MODEL, "example.png"), "rb") as f:
    PNG = f.read()

# Distinct random values, so that a match can only be the secret itself.
FILE_TOKEN = "file-" + secrets.token_hex(16)
ENV_TOKEN = "env-" + secrets.token_hex(16)
WRONG_TOKEN = "wrong-" + secrets.token_hex(16)
SECRETS = {"the token from the file": FILE_TOKEN, "the token from VLC_AUTH_TOKEN": ENV_TOKEN,
           "a wrong token a client sent": WRONG_TOKEN}


def auth(token):
    return (("authorization", "Bearer " + token),)


class Secrets(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="vlc-secrets-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.tokens = os.path.join(self.dir, "tokens")
        with open(self.tokens, "w") as f:
            f.write(FILE_TOKEN + "\n")
        self.store = os.path.join(self.dir, "sessions")

    def args(self, log_format):
        return ["--auth-token-file", self.tokens, "--session-store", self.store,
                "--dq-db", os.path.join(self.dir, "dq.sqlite"), "--dq-watch-window", "1s",
                "--log-format", log_format]

    def assertNoSecret(self, where, text):
        for name, value in SECRETS.items():
            self.assertNotIn(value, text, f"{name} appears in {where}")

    def exercise(self, addr):
        """Right and wrong tokens over gRPC and HTTP; a session left open to be saved. Returns
        the texts a client saw."""
        seen = []
        channel = grpc.insecure_channel(addr["grpc"])
        stub = pb_grpc.InferenceStub(channel)
        request = pb.GenerateRequest(prompt="what color is the triangle?",
                                     media=pb.Media(images=[PNG]))
        request.sampling.max_new_tokens = 4
        for token in (FILE_TOKEN, ENV_TOKEN, WRONG_TOKEN, "Bearer"):
            try:
                for chunk in stub.Generate(request, metadata=auth(token), timeout=60):
                    seen.append(str(chunk))
                self.assertNotEqual(token, WRONG_TOKEN, "a wrong token was accepted")
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.UNAUTHENTICATED, e.details())
                seen.append(e.details())
        # A session owned by the file's token: the snapshot saved on SIGTERM holds its owner.
        stub.CreateSession(pb.CreateSessionRequest(session_id="secret-owner",
                                                   media=pb.Media(images=[PNG])),
                           metadata=auth(FILE_TOKEN), timeout=60)
        for token in (ENV_TOKEN, WRONG_TOKEN):
            try:
                for _ in stub.SessionGenerate(pb.SessionGenerateRequest(
                        session_id="secret-owner", prompt="what color is the square?"),
                        metadata=auth(token), timeout=60):
                    pass
                self.fail("another caller's token reached the session")
            except grpc.RpcError as e:
                seen.append(e.details())
        channel.close()
        for token in (FILE_TOKEN, WRONG_TOKEN):
            req = urllib.request.Request(
                f"http://{addr['http']}/v2/models/demo/generate",
                data=b'{"text_input": "hello", "parameters": {"max_tokens": 2}}',
                headers={"Authorization": "Bearer " + token})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    seen.append(r.read().decode())
            except urllib.error.HTTPError as e:
                self.assertEqual(e.code, 401)
                seen.append(e.read().decode())
        with urllib.request.urlopen(f"http://{addr['metrics']}/metrics", timeout=60) as r:
            seen.append(r.read().decode())
        return seen

    def run_server(self, log_format):
        err = open(os.path.join(self.dir, f"stderr-{log_format}"), "w+")
        p, addr = server_process.start(args=self.args(log_format),
                                       env={"VLC_AUTH_TOKEN": ENV_TOKEN}, log_level="trace",
                                       stderr=err)
        try:
            rest = []
            reader = threading.Thread(target=lambda: rest.extend(p.stdout))
            reader.start()
            seen = self.exercise(addr)
            p.terminate()
            self.assertEqual(p.wait(timeout=120), 0)
            reader.join()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
        err.seek(0)
        log = err.read()
        err.close()
        return log, "".join(rest), seen

    def test_tokens_are_never_logged_exported_echoed_or_saved(self):
        for log_format in ("text", "json"):
            log, out, seen = self.run_server(log_format)
            # The log is there to be searched: it records the requests, the refused ones too.
            self.assertIn("UNAUTHENTICATED", log)
            self.assertIn("event=request", log)
            self.assertNoSecret(f"the {log_format} log", log)
            self.assertNoSecret("the server's standard output", out)
            for text in seen:
                self.assertNoSecret("an answer to a client", text)
        saved = []
        for base, _, files in os.walk(self.store):
            for name in files:
                with open(os.path.join(base, name), "rb") as f:
                    saved.append(f.read())
        self.assertTrue(saved, "no session snapshot was saved on SIGTERM")
        for blob in saved:
            self.assertNoSecret("a session snapshot", blob.decode("latin-1"))
        with open(os.path.join(self.dir, "dq.sqlite"), "rb") as f:
            self.assertNoSecret("the data-quality history", f.read().decode("latin-1"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLC_")}
        env["VLC_AUTH_TOKEN"] = ENV_TOKEN
        report = subprocess.run(
            [os.path.join(BIN, "vlcache-server"), "--model", MODEL, "--log-level", "trace",
             *self.args("text"), "--check-config"],
            capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(report.returncode, 0, report.stderr)
        self.assertIn("auth token: set", report.stdout + report.stderr)
        self.assertNoSecret("--check-config's report", report.stdout + report.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
