#!/usr/bin/env python3
"""Renders deploy/proxy/nginx.conf.template for a set of vlcache replicas (prints the config).

  render_nginx.py --listen 0.0.0.0:8443 --replica 10.0.0.11:50051 --replica 10.0.0.12:50051 \\
      --prefix /var/lib/vlcache-proxy > nginx.conf
"""
import argparse
import os
import re
import sys

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nginx.conf.template")
HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")


def host_port(text):
    m = HOST_PORT.match(text)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def render(listen, replicas, prefix, max_fails=1, fail_timeout="10s"):
    with open(TEMPLATE) as f:
        text = f.read()
    servers = "\n".join(f"    server {r} max_fails={max_fails} fail_timeout={fail_timeout};"
                        for r in replicas)
    return (text.replace("{{LISTEN}}", listen).replace("{{SERVERS}}", servers)
            .replace("{{PREFIX}}", prefix.rstrip("/") or "/"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", type=host_port, required=True, help="the proxy's address")
    p.add_argument("--replica", type=host_port, action="append", required=True,
                   help="a replica's gRPC address (repeat for each)")
    p.add_argument("--prefix", required=True,
                   help="an absolute folder for nginx's pid, logs and temporary files")
    args = p.parse_args()
    if not os.path.isabs(args.prefix):
        p.error("--prefix must be an absolute path")
    sys.stdout.write(render(args.listen, args.replica, args.prefix))


if __name__ == "__main__":
    main()
