"""End-to-end check with the official anthropic Python SDK against a running gemini-rotator.

Started by tests/e2e_anthropic_sdk.rs, which runs the real binary in front of the fake Gemini
upstream and passes: GR_BASE_URL, GR_TOKEN, GR_MODEL (answers GR_EXPECT; its first key is out
of quota, which the SDK must not notice), GR_CLAUDE (a claude-* name a glob alias maps to
GR_MODEL), GR_TOOL_MODEL (a Gemini 3 model scripted to call get_weather, answer, call it again
in a stream, answer; the fake validates thought signatures as Google does), GR_THINK_MODEL
(answers with thoughts, then GR_EXPECT) and GR_LIMITED_MODEL (every key out of quota). Prints
one line per check and exits non-zero on the first failure.
"""

import os

import anthropic

from checks import check, finish

BASE = os.environ["GR_BASE_URL"]
TOKEN = os.environ["GR_TOKEN"]
MODEL = os.environ["GR_MODEL"]
CLAUDE = os.environ["GR_CLAUDE"]
EXPECT = os.environ["GR_EXPECT"]
TOOL_MODEL = os.environ["GR_TOOL_MODEL"]
THINK_MODEL = os.environ["GR_THINK_MODEL"]
LIMITED = os.environ["GR_LIMITED_MODEL"]

# api_key is sent as x-api-key (ANTHROPIC_API_KEY); auth_token as a bearer (ANTHROPIC_AUTH_TOKEN).
client = anthropic.Anthropic(base_url=BASE, api_key=TOKEN, max_retries=0, timeout=20)
bearer = anthropic.Anthropic(base_url=BASE, auth_token=TOKEN, max_retries=0, timeout=20)

# Whole answers.
m = client.messages.create(
    model=MODEL,
    max_tokens=256,
    system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    messages=[{"role": "user", "content": "Say the sentence."}],
    metadata={"user_id": "e2e"},
)
check("create text", m.content[0].type == "text" and m.content[0].text == EXPECT, repr(m.content))
check("create stop_reason", m.stop_reason == "end_turn", m.stop_reason)
check("create usage", m.usage.input_tokens > 0 and m.usage.output_tokens > 0, repr(m.usage))
check("create id and type", m.id.startswith("msg_") and m.type == "message" and m.role == "assistant", m.id)
rid = getattr(m, "_request_id", None)
check("request id (request-id header)", isinstance(rid, str) and rid.startswith("req_") and len(rid) == 28, repr(rid))

m = bearer.messages.create(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
check("claude name via glob alias, bearer auth", m.content[0].text == EXPECT and m.model == CLAUDE, repr(m))

# Streaming: the SDK's own accumulation must rebuild the message.
with client.messages.stream(
    model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "Say the sentence."}]
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check("stream text", text == EXPECT, repr(text))
check("stream final message", final.content[0].text == EXPECT and final.stop_reason == "end_turn", repr(final))
check("stream usage", final.usage.output_tokens > 0, repr(final.usage))

# Raw events: the order the reference documents.
events = [e.type for e in client.messages.create(
    model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True)]
check("raw event order", events[0] == "message_start" and events[1] == "content_block_start"
      and events[-2:] == ["message_delta", "message_stop"], repr(events))

# A tool loop on Gemini 3: the signature rides in the thinking block the SDK hands back.
tools = [{
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
        "additionalProperties": False,
    },
}]
history = [{"role": "user", "content": "What is the weather in Paris?"}]
m = client.messages.create(model=TOOL_MODEL, max_tokens=1024, tools=tools, messages=history)
uses = [b for b in m.content if b.type == "tool_use"]
check("tool_use", m.stop_reason == "tool_use" and len(uses) == 1 and uses[0].name == "get_weather"
      and uses[0].input == {"location": "Paris"}, repr(m.content))
check("signature in a thinking block", m.content[0].type == "thinking" and m.content[0].signature, repr(m.content))
history += [
    {"role": "assistant", "content": m.content},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "21 degrees"}]},
]
m = client.messages.create(model=TOOL_MODEL, max_tokens=1024, tools=tools, messages=history)
check("tool loop answer", m.content[-1].type == "text" and "21" in m.content[-1].text, repr(m.content))
history += [{"role": "assistant", "content": m.content}, {"role": "user", "content": "And in Oslo?"}]
with client.messages.stream(model=TOOL_MODEL, max_tokens=1024, tools=tools, messages=history) as stream:
    final = stream.get_final_message()
uses = [b for b in final.content if b.type == "tool_use"]
check("streamed tool_use", final.stop_reason == "tool_use" and len(uses) == 1
      and uses[0].input == {"location": "Oslo"}, repr(final.content))
check("streamed signature", any(b.type == "thinking" and b.signature for b in final.content), repr(final.content))
history += [
    {"role": "assistant", "content": final.content},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "-3 degrees"}]},
]
m = client.messages.create(model=TOOL_MODEL, max_tokens=1024, tools=tools, messages=history)
check("streamed tool loop answer", m.content[-1].text == "Cold.", repr(m.content))

# Extended thinking.
m = client.messages.create(
    model=THINK_MODEL, max_tokens=16000, thinking={"type": "enabled", "budget_tokens": 8000},
    messages=[{"role": "user", "content": "Think, then say the sentence."}],
)
check("thinking block", m.content[0].type == "thinking" and m.content[0].thinking == "Pondering.", repr(m.content))
check("text after thinking", m.content[1].type == "text" and m.content[1].text == EXPECT, repr(m.content))
with client.messages.stream(
    model=THINK_MODEL, max_tokens=16000, thinking={"type": "enabled", "budget_tokens": 8000},
    messages=[{"role": "user", "content": "Think."}],
) as stream:
    thoughts = "".join(e.thinking for e in stream if e.type == "thinking")
    final = stream.get_final_message()
check("streamed thinking", thoughts == "Pondering." and final.content[0].type == "thinking", repr(final.content))

# Models, in Anthropic's shape (the SDK sends anthropic-version).
page = client.models.list()
ids = [m.id for m in page.data]
check("models list", ids == [MODEL, TOOL_MODEL] and all(m.type == "model" and m.created_at and m.display_name
      for m in page.data) and page.has_more is False, repr(page))
info = bearer.models.retrieve(CLAUDE)
check("model retrieve via glob alias, bearer auth", info.id == CLAUDE and info.type == "model", repr(info))
try:
    client.models.retrieve("no-such-model")
    check("unknown model", False, "no error")
except anthropic.NotFoundError as e:
    check("unknown model", e.status_code == 404 and e.body["error"]["type"] == "not_found_error", repr(e.body))

# Token counting.
n = client.messages.count_tokens(model=CLAUDE, system="Be brief.", tools=tools,
                                 messages=[{"role": "user", "content": "Hello, Claude"}])
check("count_tokens", n.input_tokens > 0, repr(n))

# Every key out of quota: the SDK's own rate-limit error.
try:
    client.messages.create(model=LIMITED, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    check("rate limit error", False, "no error")
except anthropic.RateLimitError as e:
    check("rate limit error", e.status_code == 429 and e.body["error"]["type"] == "rate_limit_error", repr(e.body))
    check("retry-after", int(e.response.headers.get("retry-after", "0")) >= 1, repr(e.response.headers))

# Wrong credentials and bad input, in the SDK's error types.
try:
    anthropic.Anthropic(base_url=BASE, api_key="sk-wrong", max_retries=0, timeout=20).messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    check("authentication error", False, "no error")
except anthropic.AuthenticationError as e:
    check("authentication error", e.status_code == 401, repr(e))
try:
    client.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": 5}])
    check("bad request error", False, "no error")
except anthropic.BadRequestError as e:
    check("bad request error", e.body["error"]["type"] == "invalid_request_error", repr(e.body))

finish()
