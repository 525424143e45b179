"""End-to-end check with Google's `google-genai` Python SDK against a running gemini-rotator.

Started by tests/e2e_genai_sdk.rs, which runs the real binary in front of the fake Gemini
upstream and passes: GR_BASE_URL, GR_TOKEN (a client token of the proxy, sent by the SDK as
its API key), GR_MODEL, GR_EXPECT (the text the fake answers with), GR_TOOL_MODEL (a Gemini 3
model scripted to call get_weather and then answer GR_TOOL_ANSWER; the fake checks thought
signatures) and GR_EMBED_MODEL. Prints one line per check and exits non-zero on the first
failure.
"""

import os

from google import genai
from google.genai import errors, types

from checks import check, finish

BASE = os.environ["GR_BASE_URL"]
TOKEN = os.environ["GR_TOKEN"]
MODEL = os.environ["GR_MODEL"]
EXPECT = os.environ["GR_EXPECT"]
TOOL_MODEL = os.environ["GR_TOOL_MODEL"]
TOOL_ANSWER = os.environ["GR_TOOL_ANSWER"]
EMBED_MODEL = os.environ["GR_EMBED_MODEL"]

# google-genai 3.x talks to Google's `v1` by default. The proxy serves the native API on
# `/v1beta`, and on `/v1` only the POST methods (GET /v1/models is the OpenAI list), so the
# main client sets v1beta, as the README says; a default client is checked further down.
OPTIONS = types.HttpOptions(base_url=BASE, api_version="v1beta", timeout=20_000)
client = genai.Client(api_key=TOKEN, http_options=OPTIONS)


r = client.models.generate_content(
    model=MODEL,
    contents="Say the sentence.",
    config=types.GenerateContentConfig(temperature=0.2, max_output_tokens=64),
)
check("generate text", r.text == EXPECT, repr(r.text))
check("generate usage", r.usage_metadata is not None and r.usage_metadata.total_token_count > 0,
      repr(r.usage_metadata))

chunks = list(client.models.generate_content_stream(model=MODEL, contents="Say the sentence."))
check("stream text", "".join(c.text or "" for c in chunks) == EXPECT, repr([c.text for c in chunks]))
check("stream is chunked", len(chunks) > 1, str(len(chunks)))

count = client.models.count_tokens(model=MODEL, contents="How many tokens is this?")
check("count tokens", count.total_tokens is not None and count.total_tokens > 0, repr(count))

one = client.models.embed_content(model=EMBED_MODEL, contents="hello world",
                                  config=types.EmbedContentConfig(output_dimensionality=8))
check("embed one", len(one.embeddings) == 1 and len(one.embeddings[0].values) == 8, repr(one))
many = client.models.embed_content(model=EMBED_MODEL, contents=["a", "b", "c"],
                                   config=types.EmbedContentConfig(output_dimensionality=8))
check("embed many", len(many.embeddings) == 3, repr(many))
check("embed order", many.embeddings[0].values != many.embeddings[1].values, repr(many))

m = client.models.get(model=MODEL)
check("model get", m.name == f"models/{MODEL}", repr(m.name))
names = [m.name for m in client.models.list(config={"page_size": 5})]
check("model list (every page)", f"models/{MODEL}" in names and len(names) > 5, repr(names))

# A Gemini 3 tool turn: the SDK sends the model's content back as it came, signature included.
weather = types.FunctionDeclaration(
    name="get_weather",
    description="Current weather in a city",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]},
)
config = types.GenerateContentConfig(
    tools=[types.Tool(function_declarations=[weather])],
    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
)
question = types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])
r = client.models.generate_content(model=TOOL_MODEL, contents=[question], config=config)
calls = r.function_calls or []
check("function call", len(calls) == 1 and calls[0].name == "get_weather" and calls[0].args == {"city": "Paris"},
      repr(r))
model_turn = r.candidates[0].content
check("thought signature kept", any(p.thought_signature for p in model_turn.parts), repr(model_turn))
result = types.Content(role="user", parts=[
    types.Part.from_function_response(name="get_weather", response={"temp_c": 21})])
r = client.models.generate_content(model=TOOL_MODEL, contents=[question, model_turn, result], config=config)
check("tool answer", r.text == TOOL_ANSWER, repr(r.text))

# A client with the SDK's default API version (v1): generation, counting and embedding work.
plain = genai.Client(api_key=TOKEN, http_options=types.HttpOptions(base_url=BASE, timeout=20_000))
r = plain.models.generate_content(model=MODEL, contents="Say the sentence.")
check("default api_version: generate", r.text == EXPECT, repr(r.text))
chunks = list(plain.models.generate_content_stream(model=MODEL, contents="Say the sentence."))
check("default api_version: stream", "".join(c.text or "" for c in chunks) == EXPECT,
      repr([c.text for c in chunks]))
check("default api_version: count", plain.models.count_tokens(model=MODEL, contents="hi").total_tokens > 0)
many = plain.models.embed_content(model=EMBED_MODEL, contents=["a", "b"])
check("default api_version: embed", len(many.embeddings) == 2, repr(many))
m = plain.models.get(model=MODEL)
check("default api_version: model get", m.name == f"models/{MODEL}", repr(m.name))
names = [m.name for m in plain.models.list(config={"page_size": 5})]
check("default api_version: model list", f"models/{MODEL}" in names and len(names) > 5, repr(names))

# A client on Google's preview surface (api_version="v1alpha"): the same calls, sent to v1alpha.
alpha = genai.Client(api_key=TOKEN, http_options=types.HttpOptions(base_url=BASE, api_version="v1alpha",
                                                                    timeout=20_000))
r = alpha.models.generate_content(model=MODEL, contents="Say the sentence.")
check("v1alpha: generate", r.text == EXPECT, repr(r.text))
chunks = list(alpha.models.generate_content_stream(model=MODEL, contents="Say the sentence."))
check("v1alpha: stream", "".join(c.text or "" for c in chunks) == EXPECT, repr([c.text for c in chunks]))
check("v1alpha: count", alpha.models.count_tokens(model=MODEL, contents="hi").total_tokens > 0)
names = [m.name for m in alpha.models.list(config={"page_size": 5})]
check("v1alpha: model list", f"models/{MODEL}" in names, repr(names))

# Keep the client referenced: a temporary one is closed before its request is sent.
stranger = genai.Client(api_key="wrong-token", http_options=OPTIONS)
try:
    stranger.models.generate_content(model=MODEL, contents="hi")
    check("bad token rejected", False, "no error")
except errors.ClientError as e:
    check("bad token rejected", e.code == 401, repr(e))

finish()
