"""What the generator scripts of this folder share: write a generated file, or with --check only
say whether the file on disk is what the script would write."""
import os
import sys


def write_or_check(path, text, script):
    """Writes `text` to `path`; with --check in argv returns 1 (and says so) when `path` differs."""
    if "--check" in sys.argv[1:]:
        with open(path) as f:
            if f.read() != text:
                print(f"{os.path.basename(path)} is out of date: run deploy/monitoring/{script}",
                      file=sys.stderr)
                return 1
        return 0
    with open(path, "w") as f:
        f.write(text)
    return 0
