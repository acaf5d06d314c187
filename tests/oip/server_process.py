"""The real vlcache-server as the tests in tests/oip start it: loopback ports chosen by the
system, learned from the line it prints once the model is loaded."""
import os
import subprocess
import urllib.request

ROOT = os.environ.get("VLC_SOURCE_DIR",
                      os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("VLC_BIN_DIR", os.path.join(ROOT, "build", "bin"))
DEMO = os.path.join(ROOT, "models", "demo")


def start(model=DEMO, args=(), env=None, log_level="warn", stderr=None):
    """(process, {"grpc": ..., "metrics": ..., "http": ...}) of a started server; VLC_* variables
    of the test's environment are not passed on, `env` is added; its log goes to `stderr` (a file,
    or the test's own stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VLC_")}
    full_env.update(env or {})
    server = subprocess.Popen(
        [os.path.join(BIN, "vlcache-server"), "--model", model, "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-level",
         log_level, *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=full_env)
    for line in server.stdout:
        if line.startswith("listening "):
            return server, dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    server.kill()
    server.wait()
    server.stdout.close()
    raise AssertionError("vlcache-server did not start")


def stop(server):
    server.terminate()
    server.wait(timeout=60)
    server.stdout.close()


def metric(metrics, name, **labels):
    """One series' value from the server's /metrics (0 when it is not there)."""
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
