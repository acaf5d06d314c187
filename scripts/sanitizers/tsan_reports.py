#!/usr/bin/env python3
"""Sorts ThreadSanitizer's reports (the files of `log_path`) into the project's and the libraries'.

A report is the project's when a frame of one of its conflicting accesses (or, for a lock-order
inversion, of an acquisition) is in the project's own source (not the stubs protoc generates
into a build directory); where the memory was allocated and
who created the threads do not count, since the project allocates and starts what libraries then
use. A report whose accesses are all inside libraries built without the sanitizer (Debian's gRPC,
whose callback tags grpcpp's headers put in our binaries, is the common case) is listed as the
libraries'. Exits 1 when any report is the project's.

  tsan_reports.py ROOT LOG...
"""
import collections
import re
import sys

ACCESS = re.compile(r"^\s+(Read|Write|Previous|Atomic|Mutex \S+ acquired|Cycle in lock order)")
OTHER = re.compile(r"^\s+(Location is|Thread T\d+|Mutex \S+ \(|Mutex \S+ created|SUMMARY)")
FRAME = re.compile(r"^\s+#\d+ (.*?) (\S+):\d+")


def reports(path):
    """Each report of a log file: (its kind, its access frames as (function, file))."""
    kind, frames, section = None, [], False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("WARNING: ThreadSanitizer:"):
                kind, frames, section = line.split(":", 2)[2].split("(pid")[0].strip(), [], False
            elif line.startswith("=================="):
                if kind:
                    yield kind, frames
                kind = None
            elif kind:
                if ACCESS.match(line):
                    section = True
                elif OTHER.match(line):
                    section = False
                elif section:
                    m = FRAME.match(line)
                    if m:
                        frames.append((m.group(1), m.group(2)))


def main():
    root, logs = sys.argv[1].rstrip("/") + "/", sys.argv[2:]
    ours, theirs = [], collections.Counter()
    for path in logs:
        for kind, frames in reports(path):
            # The project's own source; not the gRPC stubs generated into a build directory,
            # which are gRPC's templates instantiated for our services.
            mine = [f for f in frames
                    if f[1].startswith(root) and not f[1][len(root):].startswith("build")]
            if mine:
                ours.append((path, kind, mine[0]))
            else:
                top = next((fn for fn, _ in frames if "libsanitizer" not in _), "?")
                theirs[f"{kind} in {top.split('(')[0]}"] += 1
    for what, n in theirs.most_common():
        print(f"tsan: library-internal ({n}): {what}")
    for path, kind, (fn, file) in ours:
        print(f"tsan: PROJECT: {kind} at {fn.split('(')[0]} ({file}), {path}")
    print(f"tsan: {len(ours)} report(s) in the project's code, {sum(theirs.values())} inside "
          f"uninstrumented libraries")
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
