#!/usr/bin/env python3
"""The Open Inference Protocol's HTTP/REST binding (--http-listen) against the real vlcache-server
on the demo model: KServe v2 health, metadata and infer through NVIDIA's tritonclient[http] from
PyPI (binary tensor data and JSON), and Triton's generate / generate_stream extension through the
standard library's HTTP client, as curl or a load generator sends them. Errors carry the HTTP
status of their gRPC code and a message naming the tensor; auth and the metrics are the gRPC
service's.
Run by ctest with VLC_BIN_DIR and VLC_SOURCE_DIR set, by the virtual environment's python.
"""
import base64
import http.client
import json
import os
import subprocess
import tempfile
import time
import unittest

import numpy as np
import server_process
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT, BIN = server_process.ROOT, server_process.BIN
MODEL = "demo"
with open(os.path.join(ROOT, "models", "demo", "example.png"), "rb") as f:
    EXAMPLE = f.read()
EXAMPLE_URL = "data:image/png;base64," + base64.b64encode(EXAMPLE).decode()


def start_server(extra_env=None, model=None, args=()):
    return server_process.start(model or server_process.DEMO, args, extra_env)


def request(address, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one HTTP request."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        conn.request(method, path, body=data, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def events(raw):
    """The JSON objects of a server-sent event stream."""
    out = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            out.append(json.loads(block[len("data: "):]))
    return out


metric = server_process.metric


def tensor(name, datatype, values, binary=True):
    dtype = {"BYTES": object, "BOOL": bool, "INT32": np.int32, "FP32": np.float32}[datatype]
    array = np.array(values, dtype=dtype)
    t = httpclient.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array, binary_data=binary)
    return t


class Http(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server, fields = start_server()
        cls.http, cls.metrics = fields["http"], fields["metrics"]
        cls.client = httpclient.InferenceServerClient(url=cls.http)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        server_process.stop(cls.server)

    def generate(self, body, stream=False):
        route = "generate_stream" if stream else "generate"
        return request(self.http, "POST", f"/v2/models/{MODEL}/{route}", body,
                       {"Content-Type": "application/json"})

    def test_health_and_metadata_through_tritonclient(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready(MODEL))
        meta = self.client.get_server_metadata()
        self.assertEqual(meta["name"], "vlcache")
        self.assertIn("generate", meta["extensions"])
        model = self.client.get_model_metadata(MODEL)
        inputs = {t["name"]: (t["datatype"], t["shape"]) for t in model["inputs"]}
        self.assertEqual(inputs["text_input"], ("BYTES", [1]))
        self.assertEqual(inputs["image"], ("BYTES", [-1]))
        self.assertEqual(inputs["kv_budget"], ("FP32", [1]))
        self.assertEqual([(t["name"], t["datatype"]) for t in model["outputs"]],
                         [("text_output", "BYTES")])
        with self.assertRaises(InferenceServerException) as e:
            self.client.get_model_metadata("llava")
        self.assertEqual(e.exception.status(), "404")
        self.assertIn('serves "demo"', e.exception.message())
        status, _, body = request(self.http, "GET", "/v2/health/ready")
        self.assertEqual((status, json.loads(body)), (200, {"ready": True}))
        status, _, body = request(self.http, "GET", "/v1/models")
        self.assertEqual(status, 404)
        self.assertIn("no route GET /v1/models", json.loads(body)["error"])

    def test_infer_answers_the_readme_question_binary_and_json(self):
        # tritonclient's default: binary tensor data both ways.
        result = self.client.infer(MODEL, [
            tensor("text_input", "BYTES", [b"what color is the triangle?"]),
            tensor("image", "BYTES", [EXAMPLE]),
            tensor("exclude_input_in_output", "BOOL", [True])])
        self.assertEqual(result.as_numpy("text_output")[0].decode(), "red")
        usage = result.get_response()["parameters"]
        self.assertEqual(usage["visual_tokens"], 16)
        self.assertEqual(usage["finish_reason"], "eos")
        # All JSON, except the picture, which JSON cannot carry but as base64.
        result = self.client.infer(MODEL, [
            tensor("text_input", "BYTES", [b"what is at row 1 column 4?"], binary=False),
            tensor("image", "BYTES", [EXAMPLE]),
            tensor("exclude_input_in_output", "BOOL", [True], binary=False)],
            outputs=[httpclient.InferRequestedOutput("text_output", binary_data=False)])
        self.assertEqual(result.as_numpy("text_output")[0], "blue square")
        # The same as plain JSON, the picture in base64.
        status, _, body = request(self.http, "POST", f"/v2/models/{MODEL}/infer", {
            "id": "q7",
            "inputs": [
                {"name": "text_input", "datatype": "BYTES", "shape": [1],
                 "data": ["what color is the triangle?"]},
                {"name": "image", "datatype": "BYTES", "shape": [1],
                 "data": [base64.b64encode(EXAMPLE).decode()]}]})
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual(answer["id"], "q7")
        self.assertEqual(answer["outputs"][0]["data"], ["what color is the triangle?red"])

    def test_generate_answers_the_readme_question(self):
        status, _, body = self.generate({"text_input": "what color is the triangle?",
                                         "image": EXAMPLE_URL,
                                         "parameters": {"max_tokens": 8, "temperature": 0,
                                                        "exclude_input_in_output": True}})
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual(answer["model_name"], MODEL)
        self.assertEqual(answer["text_output"], "red")
        self.assertEqual(answer["parameters"]["generated_tokens"], 2)  # "red" and the end
        # Without exclude_input_in_output the text starts with the question (Triton's vLLM
        # backend does the same).
        status, _, body = self.generate({"text_input": "what color is the triangle?",
                                         "image": [EXAMPLE_URL]})
        self.assertEqual(json.loads(body)["text_output"], "what color is the triangle?red")

    def test_generate_stream_sends_one_event_per_delta_then_the_usage(self):
        status, headers, body = self.generate({"text_input": "what is at row 1 column 4?",
                                               "image": EXAMPLE_URL,
                                               "parameters": {"max_tokens": 16}}, stream=True)
        self.assertEqual(status, 200, body)
        self.assertTrue(headers["Content-Type"].startswith("text/event-stream"))
        got = events(body)
        self.assertGreater(len(got), 2, "the answer came in several events")
        self.assertEqual("".join(e["text_output"] for e in got), "blue square")
        finals = [e["parameters"]["triton_final_response"] for e in got]
        self.assertEqual(finals, [False] * (len(got) - 1) + [True])
        self.assertEqual(got[-1]["parameters"]["finish_reason"], "eos")
        # One event per token but the end token, which has no text, then the usage.
        self.assertEqual(got[-1]["parameters"]["generated_tokens"], len(got) - 1 + 1)

    def test_bad_requests_get_the_status_of_their_code_and_name_the_tensor(self):
        cases = [
            ({"text_input": "hi", "prompt": "x"}, 400, 'input tensor "prompt": unknown'),
            ({"text_input": 3}, 400, 'input tensor "text_input": a BYTES element is a JSON string'),
            ({"image": EXAMPLE_URL}, 400, 'input tensor "text_input": missing'),
            ({"text_input": "hi", "image": "data:image/png,abc"}, 400, "must hold base64"),
            ({"text_input": "hi", "image": "not base64!"}, 400, "not base64"),
            ({"text_input": "hi", "parameters": {"beam_width": 2}}, 400, 'unknown key "beam_width"'),
            ({"text_input": "hi", "kv_budget": "half"}, 400,
             'input tensor "kv_budget": a FP32 element is a number'),
            ({"text_input": "hi", "kv_policy": "vlcache", "kv_budget": 2.0}, 400, "budget"),
            ({"text_input": "hi", "stream": True}, 400, "POST to generate_stream"),
        ]
        for body, code, expected in cases:
            status, _, raw = self.generate(body)
            self.assertEqual(status, code, (body, raw))
            self.assertIn(expected, json.loads(raw)["error"], body)
        status, _, raw = request(self.http, "POST", f"/v2/models/{MODEL}/generate", b"{not json")
        self.assertEqual(status, 400)
        self.assertIn("not valid JSON", json.loads(raw)["error"])
        status, _, raw = request(self.http, "POST", "/v2/models/llava/generate_stream",
                                 {"text_input": "hi"})
        self.assertEqual(status, 404)
        # A stream refused at once answers with its HTTP status, not an event.
        status, _, raw = self.generate({"text_input": "hi", "video_frames": "8"}, stream=True)
        self.assertEqual(status, 400)
        self.assertIn('"video_frames"', json.loads(raw)["error"])
        status, _, raw = request(self.http, "POST", f"/v2/models/{MODEL}/infer", {
            "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [2], "data": ["a"]}]})
        self.assertEqual(status, 400)
        self.assertIn("the shape says 2 elements, data has 1", json.loads(raw)["error"])
        status, _, raw = request(self.http, "POST", f"/v2/models/{MODEL}/infer",
                                 b'{"inputs": []}xyz', {"Inference-Header-Content-Length": "14"})
        self.assertEqual(status, 400)
        self.assertIn("3 bytes of binary data follow", json.loads(raw)["error"])
        # And the server still serves.
        status, _, body = self.generate({"text_input": "what color is the triangle?",
                                         "image": EXAMPLE_URL,
                                         "parameters": {"exclude_input_in_output": True}})
        self.assertEqual((status, json.loads(body)["text_output"]), (200, "red"))

    def test_calls_are_counted_under_the_grpc_method_they_become(self):
        def count(method, code):
            return metric(self.metrics, "vlcache_requests_total", method=method, code=code)
        before = count("ModelStreamInfer", "OK"), count("ModelInfer", "INVALID_ARGUMENT")
        self.generate({"text_input": "what color is the triangle?", "image": EXAMPLE_URL},
                      stream=True)
        self.generate({"text_input": "hi", "kv_policy": "vlcache", "kv_budget": 2.0})
        after = count("ModelStreamInfer", "OK"), count("ModelInfer", "INVALID_ARGUMENT")
        self.assertEqual((after[0] - before[0], after[1] - before[1]), (1, 1))


class HttpCancel(unittest.TestCase):
    """A client that closes a stream's connection cancels its generation."""

    def test_closing_the_connection_cancels_the_generation(self):
        model = tempfile.mkdtemp(prefix="vlc-http-tiny-")
        # A random model: greedy decoding of it runs to max_tokens (it never picks the end token).
        subprocess.run([os.path.join(BIN, "vlcache-make-tiny"), "--out", model, "--seed", "1"],
                       check=True, capture_output=True)
        server, fields = start_server(model=model, args=["--max-new-tokens", "100000"])
        try:
            asked = 100000
            host, port = fields["http"].rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            conn.request("POST", "/v2/models/" + os.path.basename(model) + "/generate_stream",
                         json.dumps({"text_input": "hello", "parameters": {"max_tokens": asked}}))
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            self.assertTrue(r.readline().startswith(b"data: "))
            conn.sock.close()  # leave mid-answer
            conn.close()
            # Bounded polling: the server notices at its next write and ends the call.
            deadline = time.monotonic() + 60
            cancelled = 0.0
            while time.monotonic() < deadline and cancelled == 0:
                cancelled = metric(fields["metrics"], "vlcache_requests_total",
                                   method="ModelStreamInfer", code="CANCELLED")
                time.sleep(0.05)
            self.assertEqual(cancelled, 1)
            generated = metric(fields["metrics"], "vlcache_generated_tokens_total")
            self.assertLess(generated, asked)
            self.assertEqual(metric(fields["metrics"], "vlcache_requests_running"), 0)
        finally:
            server_process.stop(server)


class HttpAuth(unittest.TestCase):
    """With a token configured, the Authorization header is the call's credentials."""

    def test_the_bearer_token_goes_through(self):
        server, fields = start_server({"VLC_AUTH_TOKEN": "s3cret"})
        try:
            body = {"text_input": "what color is the triangle?", "image": EXAMPLE_URL,
                    "parameters": {"exclude_input_in_output": True}}
            path = f"/v2/models/{MODEL}/generate"
            status, _, raw = request(fields["http"], "POST", path, body)
            self.assertEqual(status, 401, raw)
            self.assertIn("Bearer", json.loads(raw)["error"])
            status, _, raw = request(fields["http"], "POST", path, body,
                                     {"Authorization": "Bearer wrong"})
            self.assertEqual(status, 401)
            status, _, raw = request(fields["http"], "POST", path, body,
                                     {"Authorization": "Bearer s3cret"})
            self.assertEqual((status, json.loads(raw)["text_output"]), (200, "red"))
            # Health needs no token, as on gRPC.
            status, _, _ = request(fields["http"], "GET", "/v2/health/ready")
            self.assertEqual(status, 200)
        finally:
            server_process.stop(server)


if __name__ == "__main__":
    unittest.main(verbosity=2)
