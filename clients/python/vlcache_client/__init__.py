"""A small Python client of the vlcache inference server (see client.py)."""

from vlcache_client.client import Client, Stream, pb

__all__ = ["Client", "Stream", "pb"]
