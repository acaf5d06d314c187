"""Request messages from keyword arguments, shared by the synchronous and the asyncio client."""
import pathlib
import secrets

from vlcache_client._stubs import dq, pb

SAMPLING_FIELDS = ("max_new_tokens", "temperature", "top_p", "top_k", "seed")
# Media can exceed gRPC's 4 MiB default; the server enforces its own limit.
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def read(item):
    """Media may be given as encoded bytes or as a file path."""
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    return pathlib.Path(item).read_bytes()


def media(images, video, frames):
    m = pb.Media(images=[read(i) for i in images], video_frames=frames)
    if video is not None:
        m.video = read(video)
    return m


def sampling(params):
    """Only the parameters given are set, so the server's defaults apply to the rest."""
    unknown = set(params) - set(SAMPLING_FIELDS) - {"stop"}
    if unknown:
        raise TypeError(f"unknown sampling parameters: {', '.join(sorted(unknown))}")
    s = pb.SamplingParams(**{k: v for k, v in params.items() if k != "stop" and v is not None})
    s.stop.extend(params.get("stop") or ())
    return s


def cache(kv_policy, kv_budget):
    c = pb.CacheParams(policy=kv_policy or "")
    if kv_budget is not None:
        c.budget = kv_budget
    return c


def generate(prompt, images, video, frames, kv_policy, kv_budget, params):
    return pb.GenerateRequest(media=media(images, video, frames), prompt=prompt,
                              sampling=sampling(params), cache=cache(kv_policy, kv_budget))


# The metadata that names a call's session, for proxies that route on it (docs/API.md).
SESSION_ID_METADATA = "x-session-id"


def new_session_id():
    """A session id of the client's choosing: the creation and every later call then carry the
    same x-session-id, so a proxy hashing on it sends them all to one replica."""
    return secrets.token_hex(16)


def with_session(metadata, session_id):
    return list(metadata) + [(SESSION_ID_METADATA, session_id)]


def create_session(images, video, frames, prompt_prefix, kv_policy, kv_budget, session_id):
    return pb.CreateSessionRequest(media=media(images, video, frames), prompt_prefix=prompt_prefix,
                                   cache=cache(kv_policy, kv_budget), session_id=session_id)


def turn(session_id, prompt, params):
    return pb.SessionGenerateRequest(session_id=session_id, prompt=prompt,
                                     sampling=sampling(params))


def run(key, csv, span=None):
    """One vlcache.v1.Run: csv as text or bytes; span, the period it covers (days, say), or None."""
    if span is not None and not (isinstance(span, (int, float)) and 0 < span < float("inf")):
        raise ValueError(f"span must be a finite positive number of the pipeline's unit, not {span!r}")
    return dq.Run(key=key, csv=csv.encode() if isinstance(csv, str) else bytes(csv),
                  span=float(span or 0))


def runs(items):
    """(key, csv) or (key, csv, span) tuples as vlcache.v1.Run messages."""
    return [run(*item) for item in items]


def add_runs(pipeline, items, relearn):
    """An AddRunsRequest; relearn is None (the pipeline's stored setting), "every" or "never"."""
    modes = {None: dq.RELEARN_UNSPECIFIED, "every": dq.RELEARN_EVERY, "never": dq.RELEARN_NEVER}
    if relearn not in modes:
        raise ValueError(f"relearn must be None, 'every' or 'never', not {relearn!r}")
    return dq.AddRunsRequest(pipeline=pipeline, runs=runs(items), relearn=modes[relearn])


class Answer:
    """What a streamed answer has given so far: `text` and, once it ended, `usage`."""

    def __init__(self, call):
        self._call = call
        self.text = ""
        self.usage = None

    def _take(self, response):
        """Records one message; returns its text delta ("" for none)."""
        self.text += response.text
        if response.HasField("usage"):
            self.usage = response.usage
        return response.text

    def cancel(self):
        self._call.cancel()
