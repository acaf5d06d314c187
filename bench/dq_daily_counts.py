#!/usr/bin/env python3
"""Rows per day of a JSON-records table partitioned by date: their range and sd over all days and
over the first N (the history AVH learns from), by weekday, and differenced over 7 days. Tells
whether a 10% insertion or deletion of a day's rows can stand out from the count's own spread.

    python3 bench/dq_daily_counts.py tests/data/avh/flights-20k.json --history 29
"""
import argparse
import collections
import datetime
import json
import statistics


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table", help="JSON array of records")
    ap.add_argument("--date-column", default="date")
    ap.add_argument("--history", type=int, default=29, help="days AVH learns from")
    args = ap.parse_args()
    with open(args.table) as f:
        records = json.load(f)
    days = collections.Counter(r[args.date_column][:10].replace("/", "-") for r in records)
    keys = sorted(days)
    counts = [days[k] for k in keys]
    print(f"days {len(counts)}, rows per day {min(counts)}-{max(counts)}, "
          f"mean {statistics.mean(counts):.1f}, sd {statistics.stdev(counts):.1f}, "
          f"sd over the first {args.history} {statistics.stdev(counts[:args.history]):.1f}")
    by_weekday = collections.defaultdict(list)
    for k in keys:
        by_weekday[datetime.date.fromisoformat(k).strftime("%a")].append(days[k])
    for name, xs in by_weekday.items():
        print(f"  {name}: mean {statistics.mean(xs):.1f}, sd {statistics.stdev(xs):.1f}, "
              f"{len(xs)} days")
    diff7 = [counts[i] - counts[i - 7] for i in range(7, len(counts))]
    print(f"differenced over 7 days: sd {statistics.stdev(diff7):.1f}")


if __name__ == "__main__":
    main()
