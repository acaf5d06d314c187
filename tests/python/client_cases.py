"""The Python clients' cases, run by package_test.py with each Python environment the package is
installed in: argv[1] is the server's address (the demo model, with --dq-db), argv[2] the demo
picture. Each client (sync and asyncio) runs the same cases; prints one line per passed case."""
import asyncio
import random
import sys

from vlcache_client import Client, errors
from vlcache_client.aio import AsyncClient

TARGET, IMAGE = sys.argv[1], sys.argv[2]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def csv_run(seed, shift=0.0):
    rnd = random.Random(seed)
    rows = "\n".join(f"{rnd.gauss(10 + shift, 1):.3f},{rnd.choice('abc')}" for _ in range(200))
    return "x,y\n" + rows + "\n"


def sync_cases(pipeline):
    with Client(TARGET, timeout=120) as c:
        info = c.model_info()
        check(info.num_layers == 4, f"model info: {info.num_layers} layers")
        stream = c.generate("what color is the triangle?", images=[IMAGE], max_new_tokens=16)
        deltas = list(stream)
        check("".join(deltas) == "red" and stream.usage.finish_reason == "eos",
              f"streamed answer {deltas} {stream.usage}")
        text, usage = c.generate_text("what is at row 1 column 4?", images=[IMAGE],
                                      max_new_tokens=16)
        check(text == "blue square" and usage.generated_tokens >= 2, f"collected answer {text!r}")
        chosen = c.create_session(images=[IMAGE], kv_policy="full",
                                  session_id=f"chosen-{sys.argv[3]}")
        check(chosen.session_id == f"chosen-{sys.argv[3]}", f"client-chosen id {chosen.session_id}")
        c.delete_session(chosen.session_id)
        session = c.create_session(images=[IMAGE], kv_policy="full")
        check(len(session.session_id) == 32, f"the client's own id {session.session_id}")
        text, _ = c.ask(session.session_id, "what color is the triangle?", max_new_tokens=16).collect()
        check(text == "red", f"session turn {text!r}")
        check(c.get_session(session.session_id).turns == 1, "session turns")
        c.delete_session(session.session_id)
        try:
            c.get_session(session.session_id)
            raise AssertionError("a deleted session was found")
        except errors.NotFound as e:
            check(e.code.name == "NOT_FOUND" and "deleted" in e.message, f"typed error {e}")
        try:
            list(c.generate("hello", kv_policy="vlcache", kv_budget=2.0))
            raise AssertionError("a budget of 2 was accepted")
        except errors.InvalidArgument as e:
            check("budget" in e.message, f"typed error {e}")
        added = c.add_runs(pipeline, [(f"day{i}", csv_run(i)) for i in range(10)])
        check(len(added.runs) == 10 and all(col.learned for col in added.columns),
              f"add_runs {added}")
        check(c.validate(pipeline, "day10", csv_run(10)).passed, "a run like the history passes")
        check(not c.validate(pipeline, "bad", csv_run(11, shift=50)).passed, "a shifted run fails")
        program = c.get_program(pipeline)
        check({col.column for col in program.columns} == {"x", "y"}, "program columns")
        check(pipeline in [p.name for p in c.list_pipelines().pipelines], "list_pipelines")
        kept = c.add_runs(pipeline, [("day10", csv_run(10))], relearn="never")
        check(all(col.learned and col.kept for col in kept.columns), f"relearn never {kept}")
        try:
            c.add_runs(pipeline, [("day11", csv_run(12))], relearn="sometimes")
            raise AssertionError("relearn 'sometimes' was accepted")
        except ValueError as e:
            check("never" in str(e), f"relearn error {e}")
        # Runs with their span (days): rows per day are watched; a run said to cover twice the
        # days with the same rows fails on them.
        spans = c.add_runs(pipeline + "-spans", [(f"day{i}", csv_run(i), 1) for i in range(10)])
        check(all(col.learned for col in spans.columns), f"add_runs with spans {spans}")
        check(c.validate(pipeline + "-spans", "d", csv_run(10), span=1).passed, "span 1 passes")
        halved = c.validate(pipeline + "-spans", "d", csv_run(10), span=2)
        check(not halved.passed and any(v.metric.endswith("rows_per_span") for col in halved.columns
                                        for v in col.violations), f"span 2 fails {halved}")
        try:
            c.validate(pipeline + "-spans", "d", csv_run(10), span=-1)
            raise AssertionError("a span of -1 was accepted")
        except ValueError as e:
            check("span" in str(e), f"span error {e}")
    print("sync: ok")


async def async_cases(pipeline):
    async with AsyncClient(TARGET, timeout=120) as c:
        info = await c.model_info()
        check(info.num_layers == 4, "model info")
        stream = c.generate("what color is the triangle?", images=[IMAGE], max_new_tokens=16)
        deltas = [d async for d in stream]
        check("".join(deltas) == "red" and stream.usage.generated_tokens >= 1, f"streamed {deltas}")
        # Several answers at once on one channel.
        answers = await asyncio.gather(*[
            c.generate_text(q, images=[IMAGE], max_new_tokens=16)
            for q in ["what color is the triangle?", "what is at row 1 column 4?"] * 2])
        check([a for a, _ in answers] == ["red", "blue square"] * 2, f"gathered {answers}")
        session = await c.create_session(images=[IMAGE], kv_policy="full")
        text, _ = await c.ask(session.session_id, "what is at row 1 column 4?",
                              max_new_tokens=16).collect()
        check(text == "blue square", f"session turn {text!r}")
        await c.delete_session(session.session_id)
        try:
            await c.delete_session(session.session_id)
            raise AssertionError("a session was deleted twice")
        except errors.NotFound:
            pass
        added = await c.add_runs(pipeline, [(f"day{i}", csv_run(100 + i)) for i in range(10)])
        check(all(col.learned for col in added.columns), "add_runs")
        check((await c.validate(pipeline, "day10", csv_run(110))).passed, "validate")
        check(len((await c.get_program(pipeline)).columns) == 2, "get_program")
        check(pipeline in [p.name for p in (await c.list_pipelines()).pipelines], "list_pipelines")
    print("async: ok")


if __name__ == "__main__":
    env = sys.argv[3]
    sync_cases(f"sync-{env}")
    asyncio.run(async_cases(f"async-{env}"))
