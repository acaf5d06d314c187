"""Clients of the vlcache gRPC server (docs/API.md): Client (synchronous) and, in
vlcache_client.aio, AsyncClient (asyncio), with the same methods; typed errors in
vlcache_client.errors."""

from vlcache_client._stubs import dq, pb
from vlcache_client.client import Client, Stream
from vlcache_client.errors import Error

__all__ = ["Client", "Stream", "Error", "pb", "dq"]
