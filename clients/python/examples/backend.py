#!/usr/bin/env python3
"""An example backend call: asks the vlcache server about an image and streams the answer.

    python3 clients/python/examples/backend.py --image cat.png --prompt "What is in the picture?"
"""

import argparse
import os
import pathlib
import sys

# Run from a checkout without installing: the client package sits one directory up.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from vlcache_client import Client, Error  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051", help="server HOST:PORT")
    parser.add_argument("--image", action="append", default=[], help="image file; repeatable")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    args = parser.parse_args()

    with Client(args.target, token=os.environ.get("VLC_AUTH_TOKEN")) as client:
        stream = client.generate(args.prompt, images=args.image,
                                 max_new_tokens=args.max_new_tokens)
        try:
            for delta in stream:
                print(delta, end="", flush=True)
        except Error as e:
            print(f"\nerror: {e.code.name}: {e.message}", file=sys.stderr)
            return 2
        print()
        u = stream.usage
        print(f"[{u.prompt_tokens} prompt tokens ({u.visual_tokens} visual), "
              f"{u.generated_tokens} generated, ttft {u.ttft_seconds:.3f} s, "
              f"finish: {u.finish_reason}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
