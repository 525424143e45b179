"""End-to-end check with the official openai Python SDK against a running gemini-rotator.

Started by tests/e2e_openai_sdk.rs, which runs the real binary in front of the fake Gemini
upstream and passes: GR_BASE_URL, GR_TOKEN, GR_MODEL, GR_ALIAS, GR_EXPECT (the text the fake
answers with). Prints one line per check and exits non-zero on the first failure.
"""

import os
import sys

import openai

BASE = os.environ["GR_BASE_URL"]
TOKEN = os.environ["GR_TOKEN"]
MODEL = os.environ["GR_MODEL"]
ALIAS = os.environ["GR_ALIAS"]
EXPECT = os.environ["GR_EXPECT"]

client = openai.OpenAI(base_url=BASE + "/v1", api_key=TOKEN, max_retries=0, timeout=20)
passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    passed += 1
    print(f"ok   {name}")


# Non-streaming.
r = client.chat.completions.create(
    model=MODEL,
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say the sentence."},
    ],
    temperature=0.2,
    max_tokens=64,
)
check("non-stream content", r.choices[0].message.content == EXPECT, repr(r.choices[0].message.content))
check("non-stream finish_reason", r.choices[0].finish_reason == "stop", r.choices[0].finish_reason)
check("non-stream usage", r.usage is not None and r.usage.total_tokens > 0, repr(r.usage))
check("non-stream object", r.object == "chat.completion" and r.id.startswith("chatcmpl-"), r.id)

# Streaming with include_usage: text deltas, one finish, exactly one usage chunk at the end.
stream = client.chat.completions.create(
    model=ALIAS,
    messages=[{"role": "user", "content": [{"type": "text", "text": "Say the sentence."}]}],
    stream=True,
    stream_options={"include_usage": True},
)
text, finishes, usages, ids, last = "", [], [], set(), None
for chunk in stream:
    ids.add(chunk.id)
    last = chunk
    if chunk.usage is not None:
        usages.append(chunk.usage)
    for choice in chunk.choices:
        if choice.delta.content:
            text += choice.delta.content
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
check("stream text", text == EXPECT, repr(text))
check("stream finish", finishes == ["stop"], repr(finishes))
check("stream one usage chunk", len(usages) == 1 and usages[0].completion_tokens > 0, repr(usages))
check("stream usage last", last is not None and last.usage is not None and last.choices == [], repr(last))
check("stream one id", len(ids) == 1, repr(ids))

# Streaming without include_usage: no usage chunk.
stream = client.chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
)
usages = [c.usage for c in stream if c.usage is not None]
check("stream no usage unless asked", usages == [], repr(usages))

# Models: the alias is listed; one model can be fetched.
ids = [m.id for m in client.models.list()]
check("models list has alias", ALIAS in ids, repr(ids))
check("models list has upstream model", MODEL in ids, repr(ids))
check("model get", client.models.retrieve(MODEL).id == MODEL)

# Errors surface as the SDK's typed exceptions.
try:
    openai.OpenAI(base_url=BASE + "/v1", api_key="wrong-token", max_retries=0).models.list()
    check("bad token rejected", False, "no error")
except openai.AuthenticationError as e:
    check("bad token rejected", e.status_code == 401)
try:
    client.chat.completions.create(model=MODEL, messages=[])
    check("empty messages rejected", False, "no error")
except openai.BadRequestError as e:
    check("empty messages rejected", e.status_code == 400)

print(f"{passed} passed, 0 failed")
