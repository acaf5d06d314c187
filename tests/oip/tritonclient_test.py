#!/usr/bin/env python3
"""The Open Inference Protocol checked by a client nobody here wrote: NVIDIA's tritonclient[grpc]
from PyPI (the project's virtual environment) against the real vlcache-server on the demo model.

Health and metadata, a unary infer and a streamed infer that answer the README's example question
about models/demo/example.png, the same path's limits and metrics, and bad tensors answered
INVALID_ARGUMENT with the tensor named while the server goes on serving.
Run by ctest with VLC_BIN_DIR and VLC_SOURCE_DIR set, by the virtual environment's python.
"""
import os
import queue
import re
import unittest
import urllib.request

import numpy as np
import server_process
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

ROOT = server_process.ROOT
MODEL = "demo"


NUMPY = {"BYTES": object, "BOOL": bool, "INT32": np.int32, "INT64": np.int64, "FP32": np.float32}


def tensor(name, datatype, values):
    array = np.array(values, dtype=NUMPY[datatype])
    t = grpcclient.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array)
    return t


def question(prompt, image=True, stream=None, sampling='{"max_tokens": 16, "temperature": 0}',
             exclude=True):
    inputs = [tensor("text_input", "BYTES", [prompt.encode()])]
    if image:
        with open(os.path.join(ROOT, "models", "demo", "example.png"), "rb") as f:
            inputs.append(tensor("image", "BYTES", [f.read()]))
    if stream is not None:
        inputs.append(tensor("stream", "BOOL", [stream]))
    if sampling is not None:
        inputs.append(tensor("sampling_parameters", "BYTES", [sampling.encode()]))
    if exclude is not None:
        inputs.append(tensor("exclude_input_in_output", "BOOL", [exclude]))
    return inputs


class TritonClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server, fields = server_process.start()
        cls.target, cls.metrics = fields["grpc"], fields["metrics"]
        cls.client = grpcclient.InferenceServerClient(url=cls.target)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        server_process.stop(cls.server)

    def test_health_and_metadata(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready(MODEL))
        self.assertEqual(self.client.get_server_metadata().name, "vlcache")
        meta = self.client.get_model_metadata(MODEL)
        self.assertEqual(meta.name, MODEL)
        inputs = {t.name: (t.datatype, list(t.shape)) for t in meta.inputs}
        self.assertEqual(inputs["text_input"], ("BYTES", [1]))
        self.assertEqual(inputs["stream"], ("BOOL", [1]))
        self.assertEqual(inputs["sampling_parameters"], ("BYTES", [1]))
        self.assertEqual(inputs["image"], ("BYTES", [-1]))
        self.assertEqual([(t.name, t.datatype) for t in meta.outputs], [("text_output", "BYTES")])
        with self.assertRaises(InferenceServerException) as e:
            self.client.is_model_ready("llava")
        self.assertIn("StatusCode.NOT_FOUND", str(e.exception.status()))
        self.assertIn('serves "demo"', e.exception.message())

    def test_unary_infer_answers_the_readme_question(self):
        result = self.client.infer(MODEL, question("what color is the triangle?"))
        self.assertEqual(result.as_numpy("text_output")[0].decode(), "red")
        usage = result.get_response().parameters
        self.assertGreater(usage["prompt_tokens"].int64_param, 16)
        self.assertEqual(usage["visual_tokens"].int64_param, 16)
        self.assertEqual(usage["finish_reason"].string_param, "eos")
        # Without exclude_input_in_output the text starts with the question, as Triton's vLLM
        # backend does.
        whole = self.client.infer(MODEL, question("what color is the triangle?", exclude=None))
        self.assertEqual(whole.as_numpy("text_output")[0].decode(), "what color is the triangle?red")

    def test_streamed_infer_answers_the_readme_question(self):
        responses = queue.Queue()
        self.client.start_stream(callback=lambda result, error: responses.put((result, error)))
        try:
            self.client.async_stream_infer(MODEL, question("what is at row 1 column 4?", stream=True),
                                           request_id="q1")
            pieces, final = [], False
            while not final:
                result, error = responses.get(timeout=120)
                self.assertIsNone(error)
                self.assertEqual(result.get_response().id, "q1")
                pieces.append(result.as_numpy("text_output")[0].decode())
                final = result.get_response().parameters["triton_final_response"].bool_param
            self.assertGreater(len(pieces), 1, "the answer came in several responses")
            self.assertEqual("".join(pieces), "blue square")
            # A bad request on the same stream is answered by an error; the stream goes on.
            self.client.async_stream_infer(MODEL, [tensor("text_input", "INT32", [1])])
            result, error = responses.get(timeout=60)
            self.assertIsNotNone(error)
            self.assertIn("INVALID_ARGUMENT", str(error))
            self.client.async_stream_infer(MODEL, question("what color is the triangle?",
                                                           stream=False))
            result, error = responses.get(timeout=120)
            self.assertIsNone(error)
            self.assertEqual(result.as_numpy("text_output")[0].decode(), "red")
        finally:
            self.client.stop_stream()

    def test_bad_tensors_are_invalid_argument_naming_the_tensor(self):
        cases = [
            ([tensor("prompt", "BYTES", [b"hi"])], 'input tensor "prompt": unknown'),
            ([tensor("text_input", "INT32", [1])], 'input tensor "text_input": datatype is INT32'),
            ([tensor("text_input", "BYTES", [b"a", b"b"])],
             'input tensor "text_input": expected one element'),
            (question("hi", sampling="{not json"), 'input tensor "sampling_parameters": not a JSON'),
            (question("hi", sampling='{"beam_width": 2}'), 'unknown key "beam_width"'),
            (question("hi", stream=True), "use ModelStreamInfer"),
            ([tensor("stream", "BOOL", [False])], 'input tensor "text_input": missing'),
        ]
        for inputs, expected in cases:
            with self.assertRaises(InferenceServerException, msg=expected) as e:
                self.client.infer(MODEL, inputs)
            self.assertIn("StatusCode.INVALID_ARGUMENT", str(e.exception.status()), expected)
            self.assertIn(expected, e.exception.message())
        # Our own checks apply too (one validation path): a budget out of range.
        inputs = question("hi") + [tensor("kv_policy", "BYTES", [b"vlcache"]),
                                   tensor("kv_budget", "FP32", [np.float32(2.0)])]
        with self.assertRaises(InferenceServerException) as e:
            self.client.infer(MODEL, inputs)
        self.assertIn("StatusCode.INVALID_ARGUMENT", str(e.exception.status()))
        with self.assertRaises(InferenceServerException) as e:
            self.client.infer("llava", question("hi"))
        self.assertIn("StatusCode.NOT_FOUND", str(e.exception.status()))
        # And the server still serves.
        result = self.client.infer(MODEL, question("what color is the triangle?"))
        self.assertEqual(result.as_numpy("text_output")[0].decode(), "red")

    def test_calls_are_counted_like_ours(self):
        self.client.infer(MODEL, question("what color is the triangle?"))
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        ok = re.search(r'vlcache_requests_total\{[^}]*method="ModelInfer"[^}]*code="OK"[^}]*\} (\S+)',
                       text) or re.search(
            r'vlcache_requests_total\{[^}]*code="OK"[^}]*method="ModelInfer"[^}]*\} (\S+)', text)
        self.assertIsNotNone(ok, "no ModelInfer calls counted")
        self.assertGreaterEqual(float(ok.group(1)), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
