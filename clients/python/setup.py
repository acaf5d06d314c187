"""Builds the vlcache-client package with its gRPC stubs generated from the repository's proto
files (../../proto) at build time, so that no generated copy is checked in to drift. The stubs
go into the package `vlcache.v1` (the protos' own package) beside `vlcache_client`."""
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTOS = ["vlcache/v1/inference.proto", "vlcache/v1/data_quality.proto"]


def generate(out_dir):
    missing = [p for p in PROTOS if not os.path.exists(os.path.join(PROTO_ROOT, p))]
    if missing:
        sys.exit(f"vlcache-client: {', '.join(missing)} not found under {PROTO_ROOT}: build the "
                 "package from the vlcache repository (pip install ./clients/python)")
    args = [f"--proto_path={PROTO_ROOT}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    try:
        from grpc_tools import protoc  # PyPI's grpcio-tools: the protobuf of that environment
        include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
        for p in PROTOS:
            if protoc.main(["protoc", f"-I{include}"] + args + [os.path.join(PROTO_ROOT, p)]) != 0:
                sys.exit(f"vlcache-client: grpc_tools.protoc failed on {p}")
    except ImportError:
        # Debian: protobuf-compiler and protobuf-compiler-grpc, matching python3-protobuf.
        plugin = shutil.which("grpc_python_plugin")
        if shutil.which("protoc") is None or plugin is None:
            sys.exit("vlcache-client: needs grpcio-tools, or protoc and grpc_python_plugin on PATH")
        cmd = ["protoc", f"--proto_path={PROTO_ROOT}", f"--python_out={out_dir}",
               f"--grpc_out={out_dir}", f"--plugin=protoc-gen-grpc={plugin}"]
        for p in PROTOS:
            subprocess.run(cmd + [os.path.join(PROTO_ROOT, p)], check=True)
    for d in ["vlcache", os.path.join("vlcache", "v1")]:
        open(os.path.join(out_dir, d, "__init__.py"), "a").close()


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        generate(self.build_lib)


setup(cmdclass={"build_py": BuildWithStubs})
