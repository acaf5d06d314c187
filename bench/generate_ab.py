#!/usr/bin/env python3
"""Two vlcache-generate runs of one request, alternated: two builds, or one build with two sets of
options.

Each round runs side A and side B once each (which goes first alternates from round to round),
each a fresh process answering the same picture and question with `--json`, and records its
`ttft_ms`, `media_ms` (decoding, preprocessing, vision tower) and `load_ms`. Prints the medians
and ranges of each side and of the per-round ratios A / B (above 1: B is faster). Both sides must
give the same text, or the comparison is between different work and the script stops.

  bench/generate_ab.py --a /tmp/old/build/bin/vlcache-generate --b build/bin/vlcache-generate \\
      --rounds 20
  bench/generate_ab.py --b-args="--warm-up-requests 0" --rounds 20   # one build, two settings
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(binary, extra, a):
    cmd = [binary, "--model", a.model, "--image", a.image, "--prompt", a.prompt,
           "--max-new-tokens", "1", "--threads", str(a.threads), "--json"] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_bin = os.path.join(ROOT, "build", "bin", "vlcache-generate")
    ap.add_argument("--a", default=default_bin, help="side A's vlcache-generate")
    ap.add_argument("--b", default=default_bin, help="side B's vlcache-generate")
    ap.add_argument("--a-args", default="", help="options added to side A's command")
    ap.add_argument("--b-args", default="", help="options added to side B's command")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--image", default=os.path.join(ROOT, "models", "demo", "example.png"))
    ap.add_argument("--prompt", default="what colour is the square?")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json", default="", help="also write every round here")
    a = ap.parse_args()

    sides = {"A": (a.a, shlex.split(a.a_args)), "B": (a.b, shlex.split(a.b_args))}
    first = {k: run_once(b, x, a) for k, (b, x) in sides.items()}  # page cache; not counted
    if first["A"]["text"] != first["B"]["text"]:
        sys.exit(f"the sides answer differently: {first['A']['text']!r} against "
                 f"{first['B']['text']!r}")
    rounds = []
    for r in range(a.rounds):
        row = {}
        for k in (["A", "B"] if r % 2 == 0 else ["B", "A"]):
            binary, extra = sides[k]
            j = run_once(binary, extra, a)
            row[k] = {f: j[f] for f in ("ttft_ms", "media_ms", "load_ms")}
        rounds.append(row)
    result = {"rounds": rounds, "a": " ".join([a.a] + sides["A"][1]),
              "b": " ".join([a.b] + sides["B"][1])}
    for f in ("ttft_ms", "media_ms", "load_ms"):
        result[f] = {"A": summary([rd["A"][f] for rd in rounds]),
                     "B": summary([rd["B"][f] for rd in rounds]),
                     "A/B": summary([rd["A"][f] / rd["B"][f] for rd in rounds])}
        s = result[f]
        print(f"{f:9s} A {s['A']['median']:8.2f} ({s['A']['min']:.2f}-{s['A']['max']:.2f})  "
              f"B {s['B']['median']:8.2f} ({s['B']['min']:.2f}-{s['B']['max']:.2f})  "
              f"A/B {s['A/B']['median']:.2f} ({s['A/B']['min']:.2f}-{s['A/B']['max']:.2f})")
    print(f"{a.rounds} rounds, {a.threads} thread(s); A: {result['a']}; B: {result['b']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
