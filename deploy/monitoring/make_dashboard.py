#!/usr/bin/env python3
"""Writes dashboard.json, the Grafana dashboard of vlcache-server, from the panel list below, so
that every query is written once, here, and tests can run each one against a real Prometheus
(tests/deploy). `make_dashboard.py --check` exits 1 when dashboard.json is out of date;
`make_dashboard.py --queries` prints every query, one JSON string per line."""
import json
import os
import sys

from generated import write_or_check

HERE = os.path.dirname(os.path.abspath(__file__))
SEL = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"


def quantiles(metric, title, unit="s"):
    return {
        "title": title,
        "unit": unit,
        "targets": [
            (f"p{q}", f"histogram_quantile(0.{q}, sum by (le) (rate({metric}_bucket{{{SEL}}}[{RATE}])))")
            for q in (50, 90, 99)
        ],
    }


PANELS = [
    {"title": "Requests per second by status code", "unit": "reqps",
     "targets": [("{{code}}", f"sum by (code) (rate(vlcache_requests_total{{{SEL}}}[{RATE}]))")]},
    quantiles("vlcache_time_to_first_token_seconds", "Time to first token"),
    quantiles("vlcache_inter_token_latency_seconds", "Inter-token latency"),
    quantiles("vlcache_request_duration_seconds", "End-to-end latency"),
    {"title": "Requests waiting and running", "unit": "short",
     "targets": [("waiting", f"sum(vlcache_queue_depth{{{SEL}}})"),
                 ("running", f"sum(vlcache_requests_running{{{SEL}}})")]},
    {"title": "Time waiting for admission (p50, p99)", "unit": "s",
     "targets": [(f"p{q}", f"histogram_quantile(0.{q}, sum by (le) "
                           f"(rate(vlcache_queue_time_seconds_bucket{{{SEL}}}[{RATE}])))")
                 for q in (50, 99)]},
    {"title": "KV cache bytes", "unit": "bytes",
     "targets": [("{{state}}", f"sum by (state) (vlcache_kv_cache_bytes{{{SEL}}})")]},
    {"title": "KV pool in use", "unit": "percentunit",
     "targets": [("{{instance}}", f"max by (instance) (vlcache_kv_cache_usage_ratio{{{SEL}}})")]},
    {"title": "KV bytes kept over full, by policy", "unit": "percentunit",
     "targets": [("{{policy}}",
                  f'sum by (policy) (rate(vlcache_kv_request_bytes_total{{{SEL}, state="kept"}}[{RATE}])) '
                  f'/ sum by (policy) (rate(vlcache_kv_request_bytes_total{{{SEL}, state="full"}}[{RATE}]))')]},
    {"title": "Tokens per second", "unit": "short",
     "targets": [("generated", f"sum(rate(vlcache_generated_tokens_total{{{SEL}}}[{RATE}]))"),
                 ("prompt {{modality}}",
                  f"sum by (modality) (rate(vlcache_prompt_tokens_total{{{SEL}}}[{RATE}]))")]},
    {"title": "Sessions held", "unit": "short",
     "targets": [("sessions", f"sum(vlcache_sessions_active{{{SEL}}})")]},
    {"title": "Session evictions and lookups per second", "unit": "short",
     "targets": [("evicted: {{reason}}",
                  f"sum by (reason) (rate(vlcache_session_evictions_total{{{SEL}}}[{RATE}]))"),
                 ("lookup: {{result}}",
                  f"sum by (result) (rate(vlcache_session_lookups_total{{{SEL}}}[{RATE}]))")]},
    {"title": "Data-quality verdicts on the server's own traffic (per hour)", "unit": "short",
     "targets": [("{{verdict}}",
                  f'sum by (verdict) (increase(vlcache_dq_checks_total{{{SEL}, '
                  f'pipeline="vlcache.requests"}}[1h]))')]},
]


def dashboard():
    panels = []
    for i, p in enumerate(PANELS):
        panels.append({
            "id": i + 1,
            "type": "timeseries",
            "title": p["title"],
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": p["unit"]}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [
                {"refId": chr(ord("A") + k), "expr": expr, "legendFormat": legend,
                 "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                for k, (legend, expr) in enumerate(p["targets"])
            ],
        })
    variable = lambda name, query: {
        "name": name, "type": "query", "label": name,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name}, "definition": query,
        "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
        "current": {"text": "All", "value": "$__all"},
    }
    return {
        "title": "vlcache",
        "uid": "vlcache",
        "tags": ["vlcache", "inference"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
             "current": {}},
            variable("job", "label_values(vlcache_requests_total, job)"),
            variable("instance", 'label_values(vlcache_requests_total{job=~"$job"}, instance)'),
        ]},
        "panels": panels,
        "annotations": {"list": []},
        "editable": True,
    }


def main():
    if "--queries" in sys.argv[1:]:
        for p in PANELS:
            for _, expr in p["targets"]:
                print(json.dumps(expr))
        return 0
    return write_or_check(os.path.join(HERE, "dashboard.json"),
                          json.dumps(dashboard(), indent=2) + "\n", "make_dashboard.py")


if __name__ == "__main__":
    sys.exit(main())
