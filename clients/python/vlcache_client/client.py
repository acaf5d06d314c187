"""The synchronous client of vlcache's gRPC API (docs/API.md).

    from vlcache_client import Client
    with Client("127.0.0.1:50051") as client:
        stream = client.generate("What is in the picture?", images=["cat.png"], max_new_tokens=64)
        for delta in stream:
            print(delta, end="", flush=True)
        print(stream.usage.generated_tokens)

Failed calls raise vlcache_client.errors.Error (a subclass per status code), which keeps the
gRPC code and the server's message.
"""
import pathlib

import grpc

from vlcache_client import _requests as req
from vlcache_client._stubs import dq, dq_grpc, pb, pb_grpc
from vlcache_client.errors import from_rpc_error


class Stream(req.Answer):
    """An answer being streamed: iterate for the text deltas; afterwards `text` holds the whole
    answer and `usage` the server's final accounting (a vlcache.v1.Usage)."""

    def __iter__(self):
        try:
            for response in self._call:
                delta = self._take(response)
                if delta:
                    yield delta
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def collect(self):
        """Reads the rest of the stream; returns (text, usage)."""
        for _ in self:
            pass
        return self.text, self.usage


class Client:
    """One channel to a vlcache server. `token` is sent as a bearer token; `tls_ca` (a PEM file)
    switches to TLS; `timeout` (seconds) is the default deadline of each call."""

    def __init__(self, target="127.0.0.1:50051", token=None, tls_ca=None, timeout=None):
        if tls_ca:
            creds = grpc.ssl_channel_credentials(pathlib.Path(tls_ca).read_bytes())
            self._channel = grpc.secure_channel(target, creds, options=req.CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(target, options=req.CHANNEL_OPTIONS)
        self._stub = pb_grpc.InferenceStub(self._channel)
        self._dq = dq_grpc.DataQualityStub(self._channel)
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self._timeout = timeout

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _kw(self, timeout, session_id=None):
        metadata = req.with_session(self._metadata, session_id) if session_id else self._metadata
        return {"metadata": metadata,
                "timeout": timeout if timeout is not None else self._timeout}

    def _unary(self, method, request, timeout, session_id=None):
        try:
            return method(request, **self._kw(timeout, session_id))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def generate(self, prompt, images=(), video=None, frames=0, kv_policy=None, kv_budget=None,
                 timeout=None, **sampling):
        """Streams an answer about `images` (paths or bytes) or one `video`. Sampling parameters:
        max_new_tokens, temperature (0: greedy), top_p, top_k, seed, stop (a list)."""
        request = req.generate(prompt, images, video, frames, kv_policy, kv_budget, sampling)
        return Stream(self._stub.Generate(request, **self._kw(timeout)))

    def generate_text(self, prompt, **kwargs):
        """generate() collected: returns (text, usage)."""
        return self.generate(prompt, **kwargs).collect()

    def create_session(self, images=(), video=None, frames=0, prompt_prefix="", kv_policy=None,
                       kv_budget=None, session_id=None, timeout=None):
        """Encodes the media (and prefix) once; returns a vlcache.v1.SessionInfo. The session's id
        is `session_id`, or one the client picks (see x-session-id in docs/API.md)."""
        session_id = session_id or req.new_session_id()
        request = req.create_session(images, video, frames, prompt_prefix, kv_policy, kv_budget,
                                     session_id)
        return self._unary(self._stub.CreateSession, request, timeout, session_id)

    def ask(self, session_id, prompt, timeout=None, **sampling):
        """One turn on a session; streams like generate()."""
        return Stream(self._stub.SessionGenerate(req.turn(session_id, prompt, sampling),
                                                 **self._kw(timeout, session_id)))

    def get_session(self, session_id, timeout=None):
        return self._unary(self._stub.GetSession, pb.GetSessionRequest(session_id=session_id),
                           timeout, session_id)

    def delete_session(self, session_id, timeout=None):
        self._unary(self._stub.DeleteSession, pb.DeleteSessionRequest(session_id=session_id),
                    timeout, session_id)

    def model_info(self, timeout=None):
        return self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    # Data quality (a server started with --dq-db).
    def add_runs(self, pipeline, runs, timeout=None, relearn=None):
        """Appends runs ((key, csv) or (key, csv, span) tuples, oldest first; span: the period a
        run covers, in a unit fixed for the pipeline, days say); a vlcache.v1.AddRunsResponse.

        relearn: "every" re-learns the columns' programs on every call, "never" keeps a program
        once learned; None keeps the pipeline's stored setting ("every" for a new pipeline)."""
        return self._unary(self._dq.AddRuns, req.add_runs(pipeline, runs, relearn), timeout)

    def validate(self, pipeline, key, csv, append=False, timeout=None, span=None):
        """Checks one run against the learned programs; a vlcache.v1.ValidateResponse. span: the
        period the run covers, as the pipeline's runs gave it (None: not given)."""
        run = req.run(key, csv, span)
        return self._unary(self._dq.Validate,
                           dq.ValidateRequest(pipeline=pipeline, run=run, append=append), timeout)

    def get_program(self, pipeline, timeout=None):
        return self._unary(self._dq.GetProgram, dq.GetProgramRequest(pipeline=pipeline), timeout)

    def list_pipelines(self, timeout=None):
        return self._unary(self._dq.ListPipelines, dq.ListPipelinesRequest(), timeout)
