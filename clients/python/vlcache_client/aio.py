"""The asyncio client (grpc.aio): the methods of vlcache_client.Client, awaited.

    from vlcache_client.aio import AsyncClient
    async with AsyncClient("127.0.0.1:50051") as client:
        stream = client.generate("What is in the picture?", images=["cat.png"])
        async for delta in stream:
            print(delta, end="", flush=True)
        print(stream.usage.generated_tokens)
"""
import pathlib

import grpc

from vlcache_client import _requests as req
from vlcache_client._stubs import dq, dq_grpc, pb, pb_grpc
from vlcache_client.errors import from_rpc_error


class AsyncStream(req.Answer):
    """An answer being streamed: `async for` gives the text deltas; afterwards `text` holds the
    whole answer and `usage` the server's final accounting."""

    async def __aiter__(self):
        try:
            async for response in self._call:
                delta = self._take(response)
                if delta:
                    yield delta
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def collect(self):
        """Reads the rest of the stream; returns (text, usage)."""
        async for _ in self:
            pass
        return self.text, self.usage


class AsyncClient:
    """One grpc.aio channel to a vlcache server; the arguments of Client."""

    def __init__(self, target="127.0.0.1:50051", token=None, tls_ca=None, timeout=None):
        if tls_ca:
            creds = grpc.ssl_channel_credentials(pathlib.Path(tls_ca).read_bytes())
            self._channel = grpc.aio.secure_channel(target, creds, options=req.CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=req.CHANNEL_OPTIONS)
        self._stub = pb_grpc.InferenceStub(self._channel)
        self._dq = dq_grpc.DataQualityStub(self._channel)
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self._timeout = timeout

    async def close(self):
        await self._channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def _kw(self, timeout, session_id=None):
        metadata = req.with_session(self._metadata, session_id) if session_id else self._metadata
        return {"metadata": metadata,
                "timeout": timeout if timeout is not None else self._timeout}

    async def _unary(self, method, request, timeout, session_id=None):
        try:
            return await method(request, **self._kw(timeout, session_id))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def generate(self, prompt, images=(), video=None, frames=0, kv_policy=None, kv_budget=None,
                 timeout=None, **sampling):
        request = req.generate(prompt, images, video, frames, kv_policy, kv_budget, sampling)
        return AsyncStream(self._stub.Generate(request, **self._kw(timeout)))

    async def generate_text(self, prompt, **kwargs):
        return await self.generate(prompt, **kwargs).collect()

    async def create_session(self, images=(), video=None, frames=0, prompt_prefix="",
                             kv_policy=None, kv_budget=None, session_id=None, timeout=None):
        session_id = session_id or req.new_session_id()
        request = req.create_session(images, video, frames, prompt_prefix, kv_policy, kv_budget,
                                     session_id)
        return await self._unary(self._stub.CreateSession, request, timeout, session_id)

    def ask(self, session_id, prompt, timeout=None, **sampling):
        return AsyncStream(self._stub.SessionGenerate(req.turn(session_id, prompt, sampling),
                                                      **self._kw(timeout, session_id)))

    async def get_session(self, session_id, timeout=None):
        return await self._unary(self._stub.GetSession,
                                 pb.GetSessionRequest(session_id=session_id), timeout, session_id)

    async def delete_session(self, session_id, timeout=None):
        await self._unary(self._stub.DeleteSession,
                          pb.DeleteSessionRequest(session_id=session_id), timeout, session_id)

    async def model_info(self, timeout=None):
        return await self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    async def add_runs(self, pipeline, runs, timeout=None, relearn=None):
        return await self._unary(self._dq.AddRuns, req.add_runs(pipeline, runs, relearn), timeout)

    async def validate(self, pipeline, key, csv, append=False, timeout=None, span=None):
        run = req.run(key, csv, span)
        return await self._unary(self._dq.Validate,
                                 dq.ValidateRequest(pipeline=pipeline, run=run, append=append),
                                 timeout)

    async def get_program(self, pipeline, timeout=None):
        return await self._unary(self._dq.GetProgram, dq.GetProgramRequest(pipeline=pipeline),
                                 timeout)

    async def list_pipelines(self, timeout=None):
        return await self._unary(self._dq.ListPipelines, dq.ListPipelinesRequest(), timeout)
