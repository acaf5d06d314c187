#!/usr/bin/env python3
"""The Python package (clients/python) as its users install it, against the real server:

- `pip install ./clients/python` in a fresh virtual environment, with PyPI's grpcio and the stubs
  generated at build time by PyPI's grpcio-tools;
- the same package built with Debian's protoc for Debian's python3-grpcio and python3-protobuf
  (`/usr/bin/python3 -m pip install --no-build-isolation --target DIR`);

and in each, the synchronous and the asyncio client run client_cases.py (generation streamed and
collected, sessions, model info, the data-quality calls, typed errors). Run by ctest with
VLC_BIN_DIR and VLC_SOURCE_DIR set.
"""
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.environ.get("VLC_SOURCE_DIR",
                      os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("VLC_BIN_DIR", os.path.join(ROOT, "build", "bin"))
CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "client_cases.py")
IMAGE = os.path.join(ROOT, "models", "demo", "example.png")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r.stdout


class PythonPackage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="vlcache-pypkg-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLC_")}
        cls.server = subprocess.Popen(
            [os.path.join(BIN, "vlcache-server"), "--model", os.path.join(ROOT, "models", "demo"),
             "--listen", "127.0.0.1:0", "--metrics-listen", "", "--log-level", "warn",
             "--dq-db", os.path.join(cls.dir, "dq.sqlite")],
            stdout=subprocess.PIPE, text=True, env=env)
        for line in cls.server.stdout:
            if line.startswith("listening "):
                cls.target = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)["grpc"]
                break
        else:
            raise AssertionError("vlcache-server did not start")

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(timeout=60)
        subprocess.run(["rm", "-rf", cls.dir])

    def clean_env(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VLCACHE_PY_STUBS") and not k.startswith("VLC_")}
        # A checkout's build/python must not stand in for the installed stubs.
        env["VLCACHE_PY_STUBS"] = os.path.join(self.dir, "no-stubs-here")
        return env

    def test_pip_install_in_a_fresh_virtual_environment(self):
        venv = os.path.join(self.dir, "venv")
        run([sys.executable, "-m", "venv", venv])
        run([os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
             os.path.join(ROOT, "clients", "python")])
        python = os.path.join(venv, "bin", "python")
        where = run([python, "-c", "import vlcache.v1.inference_pb2 as p, grpc; "
                     "print(p.__file__); print(grpc.__file__)"], env=self.clean_env())
        self.assertTrue(all(venv in line for line in where.splitlines()), where)
        out = run([python, CASES, self.target, IMAGE, "pypi"], env=self.clean_env(), cwd=self.dir)
        self.assertEqual(out.split(), ["sync:", "ok", "async:", "ok"])

    def test_debian_python_with_stubs_from_debian_protoc(self):
        target = os.path.join(self.dir, "debian")
        run(["/usr/bin/python3", "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
             "--disable-pip-version-check", "--target", target,
             os.path.join(ROOT, "clients", "python")])
        env = self.clean_env()
        env["PYTHONPATH"] = target
        where = run(["/usr/bin/python3", "-c", "import vlcache.v1.inference_pb2 as p, grpc; "
                     "print(p.__file__); print(grpc.__file__)"], env=env)
        lines = where.splitlines()
        self.assertIn(target, lines[0])
        self.assertTrue(lines[1].startswith("/usr/lib/python3/dist-packages/"), where)
        out = run(["/usr/bin/python3", CASES, self.target, IMAGE, "debian"], env=env, cwd=self.dir)
        self.assertEqual(out.split(), ["sync:", "ok", "async:", "ok"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
