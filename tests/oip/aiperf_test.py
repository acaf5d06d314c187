#!/usr/bin/env python3
"""A standard load generator nobody here wrote, NVIDIA's AIPerf from PyPI (the project's virtual
environment), runs a short bounded profile against the real vlcache-server through the Open
Inference Protocol's HTTP binding: Triton's generate_stream, driven by AIPerf's template endpoint,
with questions and pictures from vlcache-vqa's test split. Every request must succeed, every
answer must be the expected one, and AIPerf's request count must match the server's own.
Run by ctest with VLC_BIN_DIR and VLC_SOURCE_DIR set, by the virtual environment's python.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import server_process

ROOT, BIN = server_process.ROOT, server_process.BIN
sys.path.insert(0, os.path.join(ROOT, "bench"))
import aiperf_workload  # noqa: E402  (bench/aiperf_workload.py: the dataset, template, tokenizer)

REQUESTS = 8


class AIPerf(unittest.TestCase):
    def test_a_bounded_profile_of_generate_stream(self):
        work = tempfile.mkdtemp(prefix="vlc-aiperf-")
        items = aiperf_workload.make_items(os.path.join(BIN, "vlcache-vqa"), work, REQUESTS)
        server, fields = server_process.start()
        try:
            out = os.path.join(work, "aiperf")
            command = aiperf_workload.command(
                aiperf=os.path.join(os.path.dirname(sys.executable), "aiperf"),
                url=f"http://{fields['http']}", model="demo", work=work,
                tokenizer_model=os.path.join(ROOT, "models", "demo", "tokenizer.model"),
                requests=REQUESTS, concurrency=2, max_tokens=8, out=out, raw=True)
            # (Not HF_HUB_OFFLINE: AIPerf's offline mode looks local tokenizer folders up in the
            # hub's cache and fails; a folder path needs no network either way.)
            run = subprocess.run(command, capture_output=True, text=True, timeout=420)
            self.assertEqual(run.returncode, 0, run.stdout[-3000:] + run.stderr[-3000:])
            with open(os.path.join(out, "profile_export_aiperf.json")) as f:
                summary = json.load(f)
            self.assertEqual(summary["request_count"]["avg"], REQUESTS)
            self.assertFalse(summary.get("error_summary"), summary.get("error_summary"))
            self.assertEqual(summary["time_to_first_token"]["count"], REQUESTS)
            self.assertGreater(summary["time_to_first_token"]["min"], 0)
            # The server counted the same calls, all OK.
            self.assertEqual(server_process.metric(fields["metrics"], "vlcache_requests_total",
                                                   method="ModelStreamInfer", code="OK"), REQUESTS)
            # Every answer, as AIPerf received it, is the expected one.
            expected = {(it["prompt"], it["image_b64"]): it["answer"] for it in items}
            answered = 0
            with open(os.path.join(out, "profile_export_raw.jsonl")) as f:
                for line in f:
                    record = json.loads(line)
                    self.assertEqual(record["status"], 200)
                    payload = record["payload"]
                    picture = payload["image"][0].split(",", 1)[1]
                    text = ""
                    for response in record["responses"]:
                        for packet in response.get("packets", []):
                            if packet.get("name") == "data":
                                text += json.loads(packet["value"]).get("text_output", "")
                    self.assertEqual(text, expected[(payload["text_input"], picture)])
                    answered += 1
            self.assertEqual(answered, REQUESTS)
        finally:
            server_process.stop(server)


if __name__ == "__main__":
    unittest.main(verbosity=2)
