#!/usr/bin/env python3
"""The bad-input catalogue: every kind of bad input tried against the real vlcache-server, with
the status code and message each gets, and a correct request answered after them all.

The table in docs/RELIABILITY.md ("Bad input") is generated from CASES by
`tests/catalogue/bad_inputs.py --markdown`, and the test fails when the page and the server's
answers disagree, so the page cannot drift from what the server does.

Clients: Debian's python3-grpcio on the project's generated stubs (build/python) for gRPC, the
standard library for HTTP. Run by ctest with VLC_BIN_DIR set.
"""
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("VLC_BIN_DIR", os.path.join(ROOT, "build", "bin"))
sys.path.insert(0, os.path.join(os.path.dirname(BIN), "python"))
import grpc  # noqa: E402
from vlcache.v1 import data_quality_pb2 as dq  # noqa: E402
from vlcache.v1 import data_quality_pb2_grpc as dq_grpc  # noqa: E402
from vlcache.v1 import inference_pb2 as pb  # noqa: E402
from vlcache.v1 import inference_pb2_grpc as pb_grpc  # noqa: E402
from inference.v2 import grpc_predict_v2_pb2 as kserve  # noqa: E402
from inference.v2 import grpc_predict_v2_pb2_grpc as kserve_grpc  # noqa: E402

DOC = os.path.join(ROOT, "docs", "RELIABILITY.md")
BEGIN, END = "<!-- catalogue:begin -->", "<!-- catalogue:end -->"
TOKEN = "catalogue-token"
SECOND_TOKEN = "second-token"  # another caller
MAX_MEDIA = 1 << 20
with open(os.path.join(ROOT, "models", "demo", "example.png"), "rb") as f:
    PNG = f.read()


def png_header(width, height):
    """A PNG whose header claims width x height (its data is one pixel's worth)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00")) + chunk(b"IEND", b""))


def video(frames=4, size=32, codec="mjpeg", ext="avi"):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "v." + ext)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-loop", "1", "-i",
                        os.path.join(ROOT, "models", "demo", "example.png"), "-vf",
                        f"scale={size}:{size}", "-frames:v", str(frames), "-r", "4", "-c:v",
                        codec, out], check=True)
        with open(out, "rb") as f:
            return f.read()


class Server:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="vlc-catalogue-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLC_")}
        tokens = os.path.join(self.dir, "tokens")
        with open(tokens, "w") as f:
            f.write(TOKEN + "\n" + SECOND_TOKEN + "\n")
        self.p = subprocess.Popen(
            [os.path.join(BIN, "vlcache-server"), "--model", os.path.join(ROOT, "models", "demo"),
             "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen",
             "127.0.0.1:0", "--auth-token-file", tokens,
             "--dq-db", os.path.join(self.dir, "dq.sqlite"), "--max-media-bytes",
             str(MAX_MEDIA), "--dq-max-run-bytes", str(MAX_MEDIA), "--max-frames", "16",
             "--log-level", "warn"],
            stdout=subprocess.PIPE, text=True, env=env)
        for line in self.p.stdout:
            if line.startswith("listening "):
                self.addr = dict(f.split("=", 1) for f in line.split()[1:])
                break
        channel = grpc.insecure_channel(self.addr["grpc"], options=[
            ("grpc.max_send_message_length", 64 << 20)])
        self.inference = pb_grpc.InferenceStub(channel)
        self.oip = kserve_grpc.GRPCInferenceServiceStub(channel)
        self.dq = dq_grpc.DataQualityStub(channel)
        self.channel = channel

    def close(self):
        self.channel.close()
        self.p.terminate()
        self.p.wait(timeout=60)
        self.p.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


AUTH = (("authorization", "Bearer " + TOKEN),)


def streamed(call):
    """(code name, message) of a streamed call, read to its end."""
    try:
        for _ in call:
            pass
        return "OK", ""
    except grpc.RpcError as e:
        return e.code().name, e.details()


def generate(server, request, metadata=AUTH):
    return streamed(server.inference.Generate(request, metadata=metadata, timeout=60))


def unary(method, request, metadata=AUTH):
    try:
        method(request, metadata=metadata, timeout=60)
        return "OK", ""
    except grpc.RpcError as e:
        return e.code().name, e.details()


def turn(server, session_id, prompt="what color is the triangle?", metadata=AUTH):
    return streamed(server.inference.SessionGenerate(
        pb.SessionGenerateRequest(session_id=session_id, prompt=prompt), metadata=metadata,
        timeout=60))


def image_request(images=(PNG,), prompt="what color is the triangle?", **sampling):
    r = pb.GenerateRequest(prompt=prompt)
    r.media.images.extend(images)
    for k, v in sampling.items():
        setattr(r.sampling, k, v)
    return r


def cache_request(policy="", budget=None):
    r = image_request()
    if policy:
        r.cache.policy = policy
    if budget is not None:
        r.cache.budget = budget
    return r


def video_request(data, frames=0):
    r = pb.GenerateRequest(prompt="what color is the triangle?")
    r.media.video = data
    if frames:
        r.media.video_frames = frames
    return r


def http(server, path, body):
    req = urllib.request.Request(f"http://{server.addr['http']}{path}", data=body,
                                 headers={"Authorization": "Bearer " + TOKEN})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return str(r.status), ""
    except urllib.error.HTTPError as e:
        return str(e.code), json.loads(e.read())["error"]


def oip(server, *tensors):
    r = kserve.ModelInferRequest(model_name="demo")
    for name, datatype, values in tensors:
        t = r.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        if datatype == "BYTES":
            t.contents.bytes_contents.extend(values)
        elif datatype == "INT32":
            t.contents.int_contents.extend(values)
    return unary(server.oip.ModelInfer, r)


def add_runs(server, *runs, pipeline="catalogue"):
    return unary(server.dq.AddRuns, dq.AddRunsRequest(
        pipeline=pipeline, runs=[dq.Run(key=k, csv=c) for k, c in runs]))


# (area, input, call, expected code, a fragment of the expected message)
CASES = [
    ("media", "truncated PNG (first 100 bytes)",
     lambda s: generate(s, image_request([PNG[:100]])), "INVALID_ARGUMENT", "image 0"),
    ("media", "corrupt PNG (bytes flipped in the data)",
     lambda s: generate(s, image_request([PNG[:200] + bytes(b ^ 0x5A for b in PNG[200:400]) +
                                          PNG[400:]])), "INVALID_ARGUMENT", "image 0"),
    ("media", "not an image (text)",
     lambda s: generate(s, image_request([b"hello, this is not a picture"])), "INVALID_ARGUMENT",
     "image 0"),
    ("media", "empty image",
     lambda s: generate(s, image_request([b""])), "INVALID_ARGUMENT", "image 0"),
    ("media", "PNG claiming 100000 x 100000 pixels",
     lambda s: generate(s, image_request([png_header(100000, 100000)])), "INVALID_ARGUMENT",
     "image 0"),
    ("media", "image over --max-media-bytes",
     lambda s: generate(s, image_request([PNG + b"\0" * MAX_MEDIA])), "INVALID_ARGUMENT",
     "more than the limit of 1048576"),
    ("media", "truncated video",
     lambda s: generate(s, video_request(video()[:300])), "INVALID_ARGUMENT", "video"),
    ("media", "not a video (a PNG)",
     lambda s: generate(s, video_request(PNG)), "INVALID_ARGUMENT", "video"),
    ("media", "frames asked above --max-frames",
     lambda s: generate(s, video_request(video(), frames=1000)), "INVALID_ARGUMENT", "frames"),
    ("media", "images and a video together",
     lambda s: generate(s, pb.GenerateRequest(prompt="x", media=pb.Media(images=[PNG],
                                                                        video=video()))),
     "INVALID_ARGUMENT", "video"),
    # The server takes messages up to its largest legitimate one (here 4 runs of
    # --dq-max-run-bytes, plus 1 MiB) and refuses bigger ones before buffering them.
    ("message", "a 6 MiB message (the limit here is 5 MiB)",
     lambda s: generate(s, image_request([b"\0" * (6 << 20)])), "RESOURCE_EXHAUSTED",
     "larger than max"),
    ("prompt", "empty prompt",
     lambda s: generate(s, image_request(prompt="")), "INVALID_ARGUMENT", "prompt"),
    ("prompt", "prompt over --max-prompt-tokens (20000 words)",
     lambda s: generate(s, image_request(prompt="red " * 20000)), "INVALID_ARGUMENT",
     "tokens"),
    ("prompt", "prompt holding the image placeholder <image>",
     lambda s: generate(s, image_request(prompt="what is <image>?")), "INVALID_ARGUMENT",
     "<image>"),
    ("prompt", "invalid UTF-8 in the prompt (HTTP binding)",
     lambda s: http(s, "/v2/models/demo/generate",
                    b'{"text_input": "\xff\xfe bad", "image": "' + base64.b64encode(PNG) + b'"}'),
     "400", "JSON"),
    ("prompt", "invalid UTF-8 in the prompt (OIP text_input bytes), answered",
     lambda s: oip(s, ("text_input", "BYTES", [b"what \xff\xfe color?"]),
                   ("image", "BYTES", [PNG])), "OK", ""),
    ("cache", "unknown KV policy",
     lambda s: generate(s, cache_request("lru")), "INVALID_ARGUMENT", "lru"),
    ("cache", "KV budget 0",
     lambda s: generate(s, cache_request("vlcache", 0.0)), "INVALID_ARGUMENT", "budget"),
    ("cache", "KV budget 1.5",
     lambda s: generate(s, cache_request("vlcache", 1.5)), "INVALID_ARGUMENT", "budget"),
    ("sampling", "temperature -1",
     lambda s: generate(s, image_request(temperature=-1.0)), "INVALID_ARGUMENT", "temperature"),
    ("sampling", "top_p 2",
     lambda s: generate(s, image_request(top_p=2.0)), "INVALID_ARGUMENT", "top_p"),
    ("sampling", "top_k -3",
     lambda s: generate(s, image_request(top_k=-3)), "INVALID_ARGUMENT", "top_k"),
    ("sampling", "max_new_tokens 1000000",
     lambda s: generate(s, image_request(max_new_tokens=1000000)), "INVALID_ARGUMENT",
     "max_new_tokens"),
    ("sessions", "unknown session id",
     lambda s: turn(s, "no-such-session"), "NOT_FOUND", "unknown session id"),
    ("sessions", "session id with a slash",
     lambda s: unary(s.inference.CreateSession, pb.CreateSessionRequest(
         session_id="../etc", media=pb.Media(images=[PNG]))), "INVALID_ARGUMENT", "is not 1 to 128 of"),
    ("sessions", "a deleted session",
     lambda s: deleted_session_turn(s), "NOT_FOUND", "was deleted"),
    ("sessions", "another caller's session",
     lambda s: foreign_session_turn(s), "PERMISSION_DENIED", "another caller"),
    ("auth", "no token",
     lambda s: generate(s, image_request(), metadata=()), "UNAUTHENTICATED", "Bearer"),
    ("auth", "wrong token",
     lambda s: generate(s, image_request(), metadata=(("authorization", "Bearer nope"),)),
     "UNAUTHENTICATED", "not valid"),
    ("oip", "unknown tensor",
     lambda s: oip(s, ("prompt", "BYTES", [b"hi"])), "INVALID_ARGUMENT", 'input tensor "prompt"'),
    ("oip", "text_input of the wrong datatype",
     lambda s: oip(s, ("text_input", "INT32", [1])), "INVALID_ARGUMENT", "datatype is INT32"),
    ("oip", "bad sampling_parameters JSON",
     lambda s: oip(s, ("text_input", "BYTES", [b"hi"]),
                   ("sampling_parameters", "BYTES", [b"{not json"])), "INVALID_ARGUMENT",
     "sampling_parameters"),
    ("oip", "another model's name",
     lambda s: unary(s.oip.ModelInfer, kserve.ModelInferRequest(model_name="llava")),
     "NOT_FOUND", 'serves "demo"'),
    ("http", "a body that is not JSON",
     lambda s: http(s, "/v2/models/demo/generate", b"{nope"), "400", "not valid JSON"),
    ("http", "a shape that disagrees with the data",
     lambda s: http(s, "/v2/models/demo/infer", json.dumps({"inputs": [
         {"name": "text_input", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}).encode()),
     "400", "the shape says 2 elements"),
    ("tables", "a CSV row with more fields than the header",
     lambda s: add_runs(s, ("2024-01-01", b"a,b\n1,2,3\n")), "INVALID_ARGUMENT", "field"),
    ("tables", "an unterminated quoted CSV field",
     lambda s: add_runs(s, ("2024-01-01", b'a,b\n1,"open\n')), "INVALID_ARGUMENT", "quote"),
    ("tables", "an empty run",
     lambda s: add_runs(s, ("2024-01-01", b"")), "INVALID_ARGUMENT", "empty"),
    ("tables", "a run without a key",
     lambda s: add_runs(s, ("", b"a\n1\n")), "INVALID_ARGUMENT", "key"),
]


def deleted_session_turn(s):
    unary(s.inference.CreateSession, pb.CreateSessionRequest(
        session_id="catalogue-deleted", media=pb.Media(images=[PNG])))
    unary(s.inference.DeleteSession, pb.DeleteSessionRequest(session_id="catalogue-deleted"))
    return turn(s, "catalogue-deleted")


def foreign_session_turn(s):
    """A session created with one token, asked with the server's other token."""
    code = unary(s.inference.CreateSession, pb.CreateSessionRequest(
        session_id="catalogue-owned", media=pb.Media(images=[PNG])))
    if code[0] != "OK":
        return code
    return turn(s, "catalogue-owned", metadata=(("authorization", "Bearer " + SECOND_TOKEN),))


def markdown(results):
    lines = [BEGIN, "", "| area | input | code | message |", "| --- | --- | --- | --- |"]
    for (area, what, _, _, _), (code, message) in zip(CASES, results):
        message = message.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {area} | {what} | {code} | {message} |")
    lines += ["", END]
    return "\n".join(lines)


def run_all():
    server = Server()
    try:
        results = [case[2](server) for case in CASES]
        healthy = generate(server, image_request(max_new_tokens=4))
        return results, healthy
    finally:
        server.close()


class Catalogue(unittest.TestCase):
    def test_every_bad_input_gets_its_code_and_message_and_the_page_says_so(self):
        results, healthy = run_all()
        for (area, what, _, code, fragment), (got, message) in zip(CASES, results):
            self.assertEqual(got, code, f"{area}: {what}: {message}")
            self.assertIn(fragment, message, f"{area}: {what}")
        # After all of them, a correct request is answered.
        self.assertEqual(healthy, ("OK", ""))
        with open(DOC) as f:
            page = f.read()
        self.assertIn(markdown(results), page,
                      "docs/RELIABILITY.md is out of date: run tests/catalogue/bad_inputs.py "
                      "--markdown and paste its output")


if __name__ == "__main__":
    if "--markdown" in sys.argv:
        print(markdown(run_all()[0]))
    else:
        unittest.main(verbosity=2)
