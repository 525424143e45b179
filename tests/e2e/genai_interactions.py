"""End-to-end check of the Interactions API and batch jobs through gemini-rotator with Google's
`google-genai` Python SDK (issue #18 item 5).

Started by tests/e2e_genai_sdk.rs (`google_genai_interactions_and_batches`), which runs the real
binary with several keys (each its own Google project at the fake) and two client tokens, and
passes GR_BASE_URL, GR_TOKEN, GR_OTHER_TOKEN, GR_MODEL and GR_TURNS (follow-up turns). The Rust
side then checks that every call naming an interaction or batch went to the key that created it
and that Google answered no 403.
"""

import io
import os
import time

from google import genai
from google.genai import types

from checks import check, finish

BASE = os.environ["GR_BASE_URL"]
TOKEN = os.environ["GR_TOKEN"]
OTHER = os.environ["GR_OTHER_TOKEN"]
MODEL = os.environ["GR_MODEL"]
TURNS = int(os.environ["GR_TURNS"])

OPTIONS = types.HttpOptions(base_url=BASE, api_version="v1beta", timeout=30_000)
client = genai.Client(api_key=TOKEN, http_options=OPTIONS)
other = genai.Client(api_key=OTHER, http_options=OPTIONS)


def status_of(error):
    """The HTTP status an SDK error carries (google.genai or the interactions client's)."""
    for attr in ("code", "status_code"):
        value = getattr(error, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def refused(name, call, expected=404):
    try:
        call()
        check(name, False, "no error")
    except Exception as e:  # the interactions client raises its own error types
        check(name, status_of(e) == expected, repr(e))


# interactions.create, streamed: events with ids, the id in the first one.
events = list(client.interactions.create(model=MODEL, input="Count to three.", stream=True))
kinds = [e.event_type for e in events]
check("stream: created first", kinds[0] == "interaction.created", repr(kinds))
check("stream: completed last", kinds[-1] == "interaction.completed", repr(kinds))
check("stream: every event has an id", all(e.event_id for e in events), repr(events))
text = "".join(e.delta.text for e in events if e.event_type == "step.delta")
check("stream: the model's text", MODEL in text, repr(text))
first = events[0].interaction.id
check("stream: an interaction id", bool(first), repr(events[0]))

# Follow-up turns with previous_interaction_id, each on the creating key.
previous = first
for i in range(TURNS):
    turn = client.interactions.create(model=MODEL, input=f"And then? #{i + 1}",
                                      previous_interaction_id=previous)
    check(f"turn {i + 1}: continues", turn.previous_interaction_id == previous, repr(turn))
    check(f"turn {i + 1}: its text", MODEL in (turn.output_text or ""), repr(turn.output_text))
    previous = turn.id
streamed_turn = list(client.interactions.create(model=MODEL, input="Streamed follow-up.",
                                                previous_interaction_id=previous, stream=True))
check("streamed follow-up", streamed_turn[-1].event_type == "interaction.completed",
      repr([e.event_type for e in streamed_turn]))

got = client.interactions.get(first)
check("get", got.id == first and got.status == "completed", repr(got))
resumed = list(client.interactions.get(first, stream=True, last_event_id=events[2].event_id))
check("get: resumed after an event",
      [e.event_id for e in resumed] == [e.event_id for e in events[3:]],
      repr([e.event_id for e in resumed]))

# Another token cannot see it, nor continue it.
refused("other token: get refused", lambda: other.interactions.get(first))
refused("other token: continue refused",
        lambda: other.interactions.create(model=MODEL, input="Mine now?",
                                          previous_interaction_id=first))
refused("other token: delete refused", lambda: other.interactions.delete(first))

client.interactions.delete(first)
refused("deleted interaction gone", lambda: client.interactions.get(first))

# A file uploaded through the proxy, named in an interaction's document block, every turn on
# the file's key.
uploaded = client.files.upload(
    file=io.BytesIO(b"%PDF-1.7 a small report"),
    config=types.UploadFileConfig(mime_type="application/pdf", display_name="report.pdf"),
)
for i in range(3):
    about = client.interactions.create(model=MODEL, input=[
        {"type": "document", "uri": uploaded.uri, "mime_type": "application/pdf"},
        {"type": "text", "text": "Summarise the report."},
    ])
    check(f"interaction with the file #{i + 1}", about.status == "completed", repr(about))
refused("other token: interaction with my file refused",
        lambda: other.interactions.create(model=MODEL, input=[
            {"type": "document", "uri": uploaded.uri, "mime_type": "application/pdf"}]))

# batches.create with inline requests, polled with batches.get until done.
job = client.batches.create(
    model=MODEL,
    src=[{"contents": [{"parts": [{"text": "Say one."}], "role": "user"}]},
         {"contents": [{"parts": [{"text": "Say two."}], "role": "user"}]}],
    config=types.CreateBatchJobConfig(display_name="e2e-batch"),
)
check("batches.create", job.name is not None and job.name.startswith("batches/"), repr(job))
deadline = time.monotonic() + 30
while True:
    job = client.batches.get(name=job.name)
    if job.done or time.monotonic() > deadline:
        break
    time.sleep(0.2)
check("batches.get: done", job.done and "SUCCEEDED" in str(job.state), repr(job))
mine = [b.name for b in client.batches.list()]
check("batches.list: mine", mine == [job.name], repr(mine))

# Another token sees none of the batches, and can make its own.
check("other token: batches.list empty", list(other.batches.list()) == [])
refused("other token: batches.get refused", lambda: other.batches.get(name=job.name))
theirs = other.batches.create(
    model=MODEL, src=[{"contents": [{"parts": [{"text": "Theirs."}], "role": "user"}]}])
check("other token: own batch", theirs.name != job.name, repr(theirs))
check("other token: lists its own", [b.name for b in other.batches.list()] == [theirs.name])
check("batches.list: still mine", [b.name for b in client.batches.list()] == [job.name])

finish()
