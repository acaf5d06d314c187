"""Client of vlcache's gRPC API (proto/vlcache/v1/inference.proto).

    from vlcache_client import Client
    client = Client("127.0.0.1:50051")
    stream = client.generate("What is in the picture?", images=["cat.png"], max_new_tokens=64)
    for delta in stream:
        print(delta, end="", flush=True)
    print(stream.usage.generated_tokens)

The generated stubs are not installed as a package: they are built with the server, into
build/python. They are found through $VLCACHE_PY_STUBS, or <repo>/build/python by default.
Failed calls raise grpc.RpcError (its .code() and .details() say why).
"""

import os
import pathlib
import sys

import grpc


def _load_stubs():
    default = pathlib.Path(__file__).resolve().parents[3] / "build" / "python"
    stubs = os.environ.get("VLCACHE_PY_STUBS", str(default))
    if stubs not in sys.path:
        sys.path.insert(0, stubs)
    try:
        from vlcache.v1 import inference_pb2, inference_pb2_grpc
    except ImportError as e:
        raise ImportError(
            f"vlcache's Python stubs were not found in {stubs}: build the project "
            "(target vlc_python_stubs) or set VLCACHE_PY_STUBS") from e
    return inference_pb2, inference_pb2_grpc


pb, _pb_grpc = _load_stubs()

_SAMPLING_FIELDS = ("max_new_tokens", "temperature", "top_p", "top_k", "seed")


def _read(item):
    """Media may be given as encoded bytes or as a file path."""
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    return pathlib.Path(item).read_bytes()


def _media(images, video, frames):
    media = pb.Media(images=[_read(i) for i in images], video_frames=frames)
    if video is not None:
        media.video = _read(video)
    return media


def _sampling(params):
    """Only the parameters given are set, so the server's defaults apply to the rest."""
    unknown = set(params) - set(_SAMPLING_FIELDS) - {"stop"}
    if unknown:
        raise TypeError(f"unknown sampling parameters: {', '.join(sorted(unknown))}")
    s = pb.SamplingParams(**{k: v for k, v in params.items() if k != "stop" and v is not None})
    s.stop.extend(params.get("stop") or ())
    return s


def _cache(kv_policy, kv_budget):
    c = pb.CacheParams(policy=kv_policy or "")
    if kv_budget is not None:
        c.budget = kv_budget
    return c


class Stream:
    """An answer being streamed: iterate for the text deltas; afterwards `text` holds the whole
    answer and `usage` the server's final accounting (a vlcache.v1.Usage)."""

    def __init__(self, call):
        self._call = call
        self.text = ""
        self.usage = None

    def __iter__(self):
        for response in self._call:
            self.text += response.text
            if response.HasField("usage"):
                self.usage = response.usage
            if response.text:
                yield response.text

    def collect(self):
        """Reads the rest of the stream; returns (text, usage)."""
        for _ in self:
            pass
        return self.text, self.usage

    def cancel(self):
        self._call.cancel()


class Client:
    """One channel to a vlcache server. `token` is sent as a bearer token; `tls_ca` (a PEM file)
    switches to TLS; `timeout` (seconds) is the default deadline of each call."""

    def __init__(self, target="127.0.0.1:50051", token=None, tls_ca=None, timeout=None):
        # Media can exceed gRPC's 4 MiB default; the server enforces its own limit.
        options = [("grpc.max_send_message_length", -1),
                   ("grpc.max_receive_message_length", -1)]
        if tls_ca:
            creds = grpc.ssl_channel_credentials(pathlib.Path(tls_ca).read_bytes())
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = _pb_grpc.InferenceStub(self._channel)
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self._timeout = timeout

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _kw(self, timeout):
        return {"metadata": self._metadata,
                "timeout": timeout if timeout is not None else self._timeout}

    def generate(self, prompt, images=(), video=None, frames=0, kv_policy=None, kv_budget=None,
                 timeout=None, **sampling):
        """Streams an answer about `images` (paths or bytes) or one `video`. Sampling parameters:
        max_new_tokens, temperature (0: greedy), top_p, top_k, seed, stop (a list)."""
        req = pb.GenerateRequest(media=_media(images, video, frames), prompt=prompt,
                                 sampling=_sampling(sampling),
                                 cache=_cache(kv_policy, kv_budget))
        return Stream(self._stub.Generate(req, **self._kw(timeout)))

    def create_session(self, images=(), video=None, frames=0, prompt_prefix="", kv_policy=None,
                       kv_budget=None, timeout=None):
        """Encodes the media (and prefix) once; returns a vlcache.v1.SessionInfo."""
        req = pb.CreateSessionRequest(media=_media(images, video, frames),
                                      prompt_prefix=prompt_prefix,
                                      cache=_cache(kv_policy, kv_budget))
        return self._stub.CreateSession(req, **self._kw(timeout))

    def ask(self, session_id, prompt, timeout=None, **sampling):
        """One turn on a session; streams like generate()."""
        req = pb.SessionGenerateRequest(session_id=session_id, prompt=prompt,
                                        sampling=_sampling(sampling))
        return Stream(self._stub.SessionGenerate(req, **self._kw(timeout)))

    def get_session(self, session_id, timeout=None):
        return self._stub.GetSession(pb.GetSessionRequest(session_id=session_id),
                                     **self._kw(timeout))

    def delete_session(self, session_id, timeout=None):
        self._stub.DeleteSession(pb.DeleteSessionRequest(session_id=session_id),
                                 **self._kw(timeout))

    def model_info(self, timeout=None):
        return self._stub.GetModelInfo(pb.GetModelInfoRequest(), **self._kw(timeout))
