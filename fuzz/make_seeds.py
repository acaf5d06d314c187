#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/ from the project's own fixtures (run once from the
repository root; the seeds are committed). Needs Debian's python3-protobuf, ffmpeg, and the
Python stubs of a configured build (build/python).

Seeds are small valid inputs of each format, so that the fuzzer starts from inputs that reach
deep into each parser; inputs of findings are added beside them by hand (named finding-*).
"""
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
DEMO = os.path.join(ROOT, "models", "demo")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hf-llava-tiny-llama-new")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(path):
    with open(path, "rb") as f:
        return f.read()


def safetensors(tensors):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def snapshot(layers, kv_heads=2, head_dim=4):
    header = {"model": "a" * 64, "session_id": "s", "owner_sha256": "", "policy": "vlcache",
              "next_pos": 9, "last_token": 3, "turns": 1, "visual_tokens": 4, "has_prefix": False,
              "history": [1, 2, 3], "layers": layers, "kv_heads": kv_heads, "head_dim": head_dim,
              "dtype": "float32"}
    h = json.dumps(header).encode()
    out = b"VLCSNAP\0" + struct.pack("<II", 1, len(h)) + h
    for n in layers:
        out += struct.pack(f"<{2 * kv_heads * n * head_dim}f",
                           *[i * 0.25 for i in range(2 * kv_heads * n * head_dim)])
    return out + struct.pack("<I", zlib.crc32(out) & 0xFFFFFFFF)


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    # safetensors: small files of the dtypes the reader converts, and the first tensor of a real
    # checkpoint's header shape.
    put("safetensors", "f32-bf16", safetensors([
        ("a.weight", "F32", [2, 3], struct.pack("<6f", *range(6))),
        ("b.bias", "BF16", [4], b"\x80\x3f" * 4),
        ("c", "F16", [1, 2], b"\x00\x3c" * 2),
        ("d", "I64", [2], struct.pack("<2q", 7, -7))]))
    put("safetensors", "empty", safetensors([]))
    # config.json and preprocessor_config.json
    for path in (os.path.join(DEMO, "config.json"), os.path.join(DEMO, "preprocessor_config.json"),
                 os.path.join(FIXTURE, "config.json")):
        put("config", os.path.basename(os.path.dirname(path)) + "-" + os.path.basename(path),
            read(path))
    put("tokenizer", "demo.model", read(os.path.join(DEMO, "tokenizer.model")))
    put("tokenizer", "fixture.model", read(os.path.join(FIXTURE, "tokenizer.model")))
    # pictures: the demo's example in several formats, small
    png = os.path.join(DEMO, "example.png")
    put("image", "example.png", read(png))
    tmp = os.path.join(CORPUS, ".tmp")
    os.makedirs(tmp, exist_ok=True)
    for ext in ("jpg", "bmp", "webp", "gif"):
        out = os.path.join(tmp, "small." + ext)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", png, "-vf", "scale=24:24", out],
                       check=True)
        put("image", "small." + ext, read(out))
    # videos: 4 frames of 32x32 in the codecs the server meets
    for name, args in (("mjpeg.avi", ["-c:v", "mjpeg"]), ("ffv1.mkv", ["-c:v", "ffv1"]),
                       ("mpeg4.mp4", ["-c:v", "mpeg4"])):
        out = os.path.join(tmp, name)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-loop", "1", "-i", png, "-vf",
                        "scale=32:32", "-frames:v", "4", "-r", "4", *args, out], check=True)
        put("video", name, read(out))
    shutil.rmtree(tmp)
    # request messages (serialized protobuf)
    sys.path.insert(0, os.path.join(ROOT, "build", "python"))
    from vlcache.v1 import inference_pb2 as pb
    from inference.v2 import grpc_predict_v2_pb2 as kserve
    r = pb.GenerateRequest(prompt="what color is the triangle?")
    r.media.images.append(read(png))
    r.sampling.max_new_tokens = 8
    r.sampling.temperature = 0
    r.cache.policy = "vlcache"
    r.cache.budget = 0.1
    put("request", "generate", r.SerializeToString())
    m = kserve.ModelInferRequest(model_name="demo", id="1")
    t = m.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(b"what is at row 1 column 4?")
    t = m.inputs.add(name="sampling_parameters", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(b'{"max_tokens": 8, "stop": ["."]}')
    t = m.inputs.add(name="kv_budget", datatype="FP32", shape=[1])
    t.contents.fp32_contents.append(0.5)
    put("request", "model-infer", m.SerializeToString())
    # HTTP bodies: the first two bytes say where binary data would start
    b64 = base64.b64encode(read(png)).decode()
    put("http", "generate", b"\x00\x00" + json.dumps(
        {"text_input": "what color is the triangle?", "image": "data:image/png;base64," + b64[:64],
         "parameters": {"max_tokens": 8, "temperature": 0, "stop": ["."]}}).encode())
    infer = json.dumps({"id": "q", "inputs": [
        {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["hi"]},
        {"name": "kv_budget", "datatype": "FP32", "shape": [1], "data": [0.5]},
        {"name": "image", "datatype": "BYTES", "shape": [1],
         "parameters": {"binary_data_size": 8}}],
        "outputs": [{"name": "text_output", "parameters": {"binary_data": True}}]}).encode()
    put("http", "infer-binary", struct.pack(">H", len(infer)) + infer + struct.pack("<I", 4) + b"\x89PNG")
    # data-quality tables
    put("dq_table", "run.csv", "date,city,temp,flag\n2024-01-01,Oslo,-3.5,\"a,b\"\n"
        "2024-01-02,\"Rio\",31,\n2024/02/01 06:00,Lima,,x\"\"y\n")
    put("dq_table", "run.json", json.dumps([
        {"date": "2024-01-01", "n": 1, "s": "x", "b": True},
        {"date": "2024-01-02", "n": 2.5, "s": None},
        {"date": "2024-02-03T00:00", "n": "7", "extra": 1}]))
    # session snapshots
    put("snapshot", "two-layers", snapshot([3, 0]))
    put("snapshot", "one-layer", snapshot([5], kv_heads=1, head_dim=2))


if __name__ == "__main__":
    main()
