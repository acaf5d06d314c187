"""The generated stubs: the installed package `vlcache.v1` (pip install ./clients/python generates
it), or, in a checkout without installing, the ones the project's build writes to build/python
($VLCACHE_PY_STUBS names another folder)."""
import os
import pathlib
import sys


def load():
    try:
        from vlcache.v1 import data_quality_pb2, data_quality_pb2_grpc, inference_pb2, inference_pb2_grpc
    except ImportError:
        default = pathlib.Path(__file__).resolve().parents[3] / "build" / "python"
        stubs = os.environ.get("VLCACHE_PY_STUBS", str(default))
        if stubs not in sys.path:
            sys.path.insert(0, stubs)
        try:
            from vlcache.v1 import (data_quality_pb2, data_quality_pb2_grpc, inference_pb2,
                                    inference_pb2_grpc)
        except ImportError as e:
            raise ImportError(
                f"vlcache's Python stubs were not found: pip install ./clients/python, or build "
                f"the project (target vlc_python_stubs, into {stubs}) or set VLCACHE_PY_STUBS"
            ) from e
    return inference_pb2, inference_pb2_grpc, data_quality_pb2, data_quality_pb2_grpc


pb, pb_grpc, dq, dq_grpc = load()
