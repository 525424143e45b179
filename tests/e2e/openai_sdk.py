"""End-to-end check with the official openai Python SDK against a running gemini-rotator.

Started by tests/e2e_openai_sdk.rs, which runs the real binary in front of the fake Gemini
upstream and passes: GR_BASE_URL, GR_TOKEN, GR_MODEL, GR_ALIAS, GR_EXPECT (the text the fake
answers with), GR_TOOL_MODEL (a Gemini 3 model scripted to call get_weather, answer, then
call it again in a stream; the fake validates thought signatures as Google does),
GR_JSON_MODEL (scripted to answer GR_JSON), GR_LEGACY_MODEL (scripted for a legacy
`functions` call, its answer, then a streamed call) and GR_EMBED_MODEL; for images GR_IMAGEN (an
Imagen model), GR_IMAGE_MODEL (a Gemini image model), GR_IMAGE_PROMPT and the base64 of the
images the fake makes for it (GR_IMAGEN_B64_0, GR_IMAGEN_B64_1, GR_IMAGE_B64). A context cache
is made with google-genai through the native route, then used from the openai SDK. Prints one
line per check and exits non-zero on the first failure.
"""

import base64
import json
import os
import struct

import openai
import pydantic
from google import genai
from google.genai import types

from checks import check, finish

BASE = os.environ["GR_BASE_URL"]
TOKEN = os.environ["GR_TOKEN"]
MODEL = os.environ["GR_MODEL"]
ALIAS = os.environ["GR_ALIAS"]
EXPECT = os.environ["GR_EXPECT"]
TOOL_MODEL = os.environ["GR_TOOL_MODEL"]
JSON_MODEL = os.environ["GR_JSON_MODEL"]
LEGACY_MODEL = os.environ["GR_LEGACY_MODEL"]
JSON_ANSWER = os.environ["GR_JSON"]
EMBED_MODEL = os.environ["GR_EMBED_MODEL"]
IMAGEN = os.environ["GR_IMAGEN"]
IMAGE_MODEL = os.environ["GR_IMAGE_MODEL"]
IMAGE_PROMPT = os.environ["GR_IMAGE_PROMPT"]
IMAGEN_BYTES = [base64.b64decode(os.environ["GR_IMAGEN_B64_0"]),
                base64.b64decode(os.environ["GR_IMAGEN_B64_1"])]
IMAGE_BYTES = base64.b64decode(os.environ["GR_IMAGE_B64"])

client = openai.OpenAI(base_url=BASE + "/v1", api_key=TOKEN, max_retries=0, timeout=20)


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
rid = getattr(r, "_request_id", None)
check("request id (x-request-id header)", isinstance(rid, str) and rid.startswith("req_") and len(rid) == 28, repr(rid))

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

# Tools on Gemini 3: a call, its result sent back (the SDK's own message object, as most
# agents do it), and the answer. The fake refuses the second step without the signature.
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}]
history = [{"role": "user", "content": "Weather in Paris?"}]
r = client.chat.completions.create(model=TOOL_MODEL, messages=history, tools=tools, tool_choice="auto",
                                   parallel_tool_calls=False)
msg = r.choices[0].message
check("tool call finish_reason", r.choices[0].finish_reason == "tool_calls", r.choices[0].finish_reason)
check("tool call shape", msg.tool_calls is not None and len(msg.tool_calls) == 1, repr(msg))
call = msg.tool_calls[0]
check("tool call name and args", call.function.name == "get_weather"
      and json.loads(call.function.arguments) == {"city": "Paris"}, repr(call))
extra = (call.model_extra or {}).get("extra_content") or {}
check("tool call carries the signature", extra.get("google", {}).get("thought_signature") == "sig-e2e-1",
      repr(call.model_extra))
history.append(msg)
history.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})})
r = client.chat.completions.create(model=TOOL_MODEL, messages=history, tools=tools)
check("tool loop answer", r.choices[0].message.content == "21 degrees and sunny.", repr(r.choices[0]))

# Streaming tool calls: index, id, type and name on the first fragment, "{}"-or-JSON arguments.
stream = client.chat.completions.create(
    model=TOOL_MODEL,
    messages=[{"role": "user", "content": "And in Oslo?"}],
    tools=tools,
    stream=True,
)
calls, finishes = {}, []
for chunk in stream:
    for choice in chunk.choices:
        for d in choice.delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"id": None, "name": None, "args": ""})
            if d.id:
                entry["id"] = d.id
            if d.function and d.function.name:
                entry["name"] = d.function.name
            if d.function and d.function.arguments:
                entry["args"] += d.function.arguments
            if d.id:
                check("stream tool call first fragment", d.type == "function" and d.function.name, repr(d))
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
check("stream tool call", list(calls) == [0] and calls[0]["name"] == "get_weather"
      and json.loads(calls[0]["args"]) == {"city": "Oslo"} and calls[0]["id"], repr(calls))
check("stream tool finish", finishes == ["tool_calls"], repr(finishes))

# The deprecated function calling older clients still send (`functions`, `function_call`,
# `role: "function"`): the call comes back as `message.function_call`.
legacy_fns = [tools[0]["function"]]
question = {"role": "user", "content": "Weather in Rome?"}
r = client.chat.completions.create(model=LEGACY_MODEL, messages=[question], functions=legacy_fns,
                                   function_call="auto")
m = r.choices[0].message
check("legacy function_call", r.choices[0].finish_reason == "function_call" and m.function_call
      and m.function_call.name == "get_weather" and json.loads(m.function_call.arguments) == {"city": "Rome"}
      and not m.tool_calls, repr(r.choices[0]))
r = client.chat.completions.create(
    model=LEGACY_MODEL,
    messages=[question, {"role": "assistant", "content": None,
                         "function_call": {"name": m.function_call.name, "arguments": m.function_call.arguments}},
              {"role": "function", "name": "get_weather", "content": json.dumps({"temp_c": 19})}],
    functions=legacy_fns,
)
check("legacy function loop answer", r.choices[0].message.content == "19 degrees.", repr(r.choices[0]))
stream = client.chat.completions.create(model=LEGACY_MODEL, messages=[question], functions=legacy_fns,
                                        stream=True)
name, args, finishes = None, "", []
for chunk in stream:
    for choice in chunk.choices:
        if choice.delta.function_call:
            name = choice.delta.function_call.name or name
            args += choice.delta.function_call.arguments or ""
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
check("legacy stream function_call", name == "get_weather" and json.loads(args) == {"city": "Lima"}
      and finishes == ["function_call"], repr((name, args, finishes)))


# Structured output through the SDK's own parse helper (strict schema with $defs/$ref).
class City(pydantic.BaseModel):
    name: str
    country: str


class Answer(pydantic.BaseModel):
    city: City
    temp_c: int


r = client.chat.completions.parse(
    model=JSON_MODEL,
    messages=[{"role": "user", "content": "Weather as JSON"}],
    response_format=Answer,
)
parsed = r.choices[0].message.parsed
check("json_schema parsed", parsed is not None and parsed.city.name == "Paris" and parsed.temp_c == 21,
      repr(r.choices[0].message))
r = client.chat.completions.create(
    model=JSON_MODEL,
    messages=[{"role": "user", "content": "Weather as JSON"}],
    response_format={"type": "json_object"},
)
check("json_object", json.loads(r.choices[0].message.content) == json.loads(JSON_ANSWER),
      r.choices[0].message.content)

# Embeddings: explicit float, explicit base64 (raw), and the SDK default (base64 decoded by
# the SDK) all agree.
texts = ["first text", "second text", "third text"]
floats = client.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float", dimensions=8)
check("embeddings float", [d.index for d in floats.data] == [0, 1, 2]
      and all(len(d.embedding) == 8 for d in floats.data), repr(floats.data[:1]))
check("embeddings usage", floats.usage.prompt_tokens > 0 and floats.usage.total_tokens == floats.usage.prompt_tokens,
      repr(floats.usage))
default = client.embeddings.create(model=EMBED_MODEL, input=texts, dimensions=8)
as_f32 = [[struct.unpack("<f", struct.pack("<f", v))[0] for v in d.embedding] for d in floats.data]
check("embeddings default (base64 decoded by the SDK)", [d.embedding for d in default.data] == as_f32,
      repr(default.data[0].embedding[:3]))
raw = client.embeddings.create(model=EMBED_MODEL, input="first text", encoding_format="base64", dimensions=8)
blob = base64.b64decode(raw.data[0].embedding)
check("embeddings base64 is little-endian f32", list(struct.unpack("<8f", blob)) == as_f32[0], repr(blob))
try:
    client.embeddings.create(model=EMBED_MODEL, input=[[101, 2023, 102]], encoding_format="float")
    check("token-id input rejected", False, "no error")
except openai.BadRequestError as e:
    check("token-id input rejected", e.status_code == 400)

# Images API: Imagen (one :predict for n=2) and a Gemini image model; the bytes are the fake's.
img = client.images.generate(model=IMAGEN, prompt=IMAGE_PROMPT, n=2, size="1024x1024")
got = [base64.b64decode(d.b64_json) for d in img.data]
check("images.generate imagen n=2", got == IMAGEN_BYTES, repr([len(g) for g in got]))
check("images.generate created", img.created > 1_700_000_000, repr(img.created))
img = client.images.generate(model=IMAGE_MODEL, prompt=IMAGE_PROMPT, size="1536x1024")
check("images.generate gemini image model",
      len(img.data) == 1 and base64.b64decode(img.data[0].b64_json) == IMAGE_BYTES,
      repr(img.data[0].model_dump().keys()))
check("images.generate usage", img.usage is not None and img.usage.input_tokens > 0, repr(img.usage))
try:
    client.images.generate(model=IMAGEN, prompt=IMAGE_PROMPT, size="1000x1000")
    check("images.generate bad size", False, "no error")
except openai.BadRequestError as e:
    check("images.generate bad size", e.status_code == 400 and "size" in str(e), str(e))

# Chat with an image model: OpenRouter's message.images, kept by the SDK as an extra field.
r = client.chat.completions.create(model=IMAGE_MODEL, messages=[{"role": "user", "content": IMAGE_PROMPT}])
images = (r.choices[0].message.model_extra or {}).get("images") or []
url = images[0]["image_url"]["url"] if images else ""
check("chat message.images", url.startswith("data:image/png;base64,")
      and base64.b64decode(url.split(",", 1)[1]) == IMAGE_BYTES, repr(url[:60]))

# A context cache made through the native route (google-genai), used from the openai SDK.
gclient = genai.Client(api_key=TOKEN, http_options=types.HttpOptions(base_url=BASE, api_version="v1beta"))
cache = gclient.caches.create(model=MODEL, config=types.CreateCachedContentConfig(
    contents=["A long document about foxes."], ttl="600s"))
check("caches.create", cache.name.startswith("cachedContents/"), repr(cache.name))
for i in range(4):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the document about?"}],
        extra_body={"google": {"cached_content": cache.name}},
    )
    check(f"chat with cached_content {i}", r.choices[0].message.content == EXPECT,
          repr(r.choices[0].message.content))
try:
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}],
        extra_body={"google": {"cached_content": "cachedContents/never-made"}})
    check("unknown cache refused", False, "no error")
except openai.NotFoundError as e:
    check("unknown cache refused", e.status_code == 404 and "never-made" in str(e), str(e))

finish()
