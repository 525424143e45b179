"""End-to-end check of the Responses API with the official openai Python SDK against a running
gemini-rotator.

Started by tests/e2e_responses_sdk.rs, which runs the real binary in front of the fake Gemini
upstream and passes: GR_BASE_URL, GR_TOKEN, GR_MODEL (answers GR_EXPECT; its first key
answers 429 once), GR_TOOL_MODEL (a Gemini 3 model scripted to call get_weather, answer, call
it again, answer again; the fake validates thought signatures as Google does) and
GR_LIMITED_MODEL (every key rate-limited). Prints one line per check and exits non-zero on the
first failure.
"""

import os

import openai

from checks import check, finish

BASE = os.environ["GR_BASE_URL"]
TOKEN = os.environ["GR_TOKEN"]
MODEL = os.environ["GR_MODEL"]
EXPECT = os.environ["GR_EXPECT"]
TOOL_MODEL = os.environ["GR_TOOL_MODEL"]
LIMITED_MODEL = os.environ["GR_LIMITED_MODEL"]

client = openai.OpenAI(base_url=BASE + "/v1", api_key=TOKEN, max_retries=0, timeout=20)

# Whole answer (the first key's 429 is invisible).
r = client.responses.create(model=MODEL, instructions="Be brief.", input="Say the sentence.")
check("create output_text", r.output_text == EXPECT, repr(r.output_text))
check("create status", r.status == "completed", r.status)
check("create id", r.id.startswith("resp_") and r.object == "response", r.id)
check("create usage", r.usage is not None and r.usage.total_tokens > 0, repr(r.usage))
check("create message item", r.output[0].type == "message" and r.output[0].role == "assistant",
      repr(r.output))

# Streamed, raw events.
events = list(client.responses.create(model=MODEL, input="Say the sentence.", stream=True))
types = [e.type for e in events]
check("stream starts", types[:2] == ["response.created", "response.in_progress"], repr(types))
check("stream ends", types[-1] == "response.completed", repr(types))
check("stream sequence numbers", [e.sequence_number for e in events] == list(range(len(events))),
      repr([e.sequence_number for e in events]))
deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
check("stream deltas", deltas == EXPECT, repr(deltas))
check("stream completed output_text", events[-1].response.output_text == EXPECT,
      repr(events[-1].response))

# Streamed through the SDK's accumulating helper, which checks the event sequence itself.
with client.responses.stream(model=MODEL, input="Say the sentence.") as s:
    seen = [e.type for e in s]
    final = s.get_final_response()
check("stream helper final", final.output_text == EXPECT, repr(final))
check("stream helper text done", "response.output_text.done" in seen, repr(seen))

# Log probabilities, whole and through the accumulating stream helper (typed by the SDK).
lp = client.responses.create(model=MODEL, input="Say the sentence.",
                             include=["message.output_text.logprobs"], top_logprobs=2)
tokens = lp.output[0].content[0].logprobs or []
check("logprobs tokens", "".join(t.token for t in tokens) == lp.output_text and len(tokens) > 0,
      repr(tokens[:3]))
check("logprobs top", all(len(t.top_logprobs) == 2 and t.logprob < 0 for t in tokens),
      repr(tokens[:1]))
with client.responses.stream(model=MODEL, input="Say the sentence.",
                             include=["message.output_text.logprobs"], top_logprobs=1) as s:
    for _ in s:
        pass
    streamed = s.get_final_response()
tokens = streamed.output[0].content[0].logprobs or []
check("stream helper logprobs", "".join(t.token for t in tokens) == streamed.output_text,
      repr(tokens[:3]))

# retrieve, the input items it was answered from, and delete.
got = client.responses.retrieve(r.id)
check("retrieve", got.id == r.id and got.output_text == EXPECT, repr(got))
items = list(client.responses.input_items.list(r.id))
check("input_items", len(items) == 1 and items[0].type == "message" and items[0].role == "user"
      and items[0].content[0].text == "Say the sentence.", repr(items))
client.responses.delete(r.id)
try:
    client.responses.retrieve(r.id)
    check("retrieve after delete is 404", False, "no error")
except openai.NotFoundError as e:
    check("retrieve after delete is 404", e.status_code == 404, repr(e))

# input_tokens.
count = client.responses.input_tokens.count(model=MODEL, input="How many tokens?")
check("input_tokens", count.input_tokens > 0, repr(count))

# A function-tool loop with previous_response_id (Gemini 3: the stored turn keeps its
# thought signature).
tools = [{
    "type": "function", "name": "get_weather", "description": "Weather for a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False},
}]
r1 = client.responses.create(model=TOOL_MODEL, input="Weather in Paris?", tools=tools)
calls = [o for o in r1.output if o.type == "function_call"]
check("tool call", len(calls) == 1 and calls[0].name == "get_weather", repr(r1.output))
check("tool call arguments", calls[0].arguments.replace(" ", "") == '{"city":"Paris"}',
      calls[0].arguments)
r2 = client.responses.create(
    model=TOOL_MODEL, previous_response_id=r1.id, tools=tools,
    input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "21C"}],
)
check("tool answer via previous_response_id", r2.output_text == "21 degrees and sunny.",
      repr(r2.output))

# The same loop stateless, as Codex does: store=False, encrypted reasoning, whole history.
history = [{"role": "user", "content": "Weather in Oslo?"}]
r3 = client.responses.create(model=TOOL_MODEL, input=history, tools=tools, store=False,
                             include=["reasoning.encrypted_content"], stream=False)
reasoning = [o for o in r3.output if o.type == "reasoning"]
check("encrypted reasoning", len(reasoning) == 1 and bool(reasoning[0].encrypted_content),
      repr(r3.output))
call = [o for o in r3.output if o.type == "function_call"][0]
history += [o.model_dump(exclude_none=True) for o in r3.output]
history.append({"type": "function_call_output", "call_id": call.call_id, "output": "-3C"})
with client.responses.stream(model=TOOL_MODEL, input=history, tools=tools, store=False,
                             include=["reasoning.encrypted_content"]) as s:
    for _ in s:
        pass
    r4 = s.get_final_response()
check("stateless tool answer", r4.output_text == "Cold in Oslo.", repr(r4.output))

# Every key rate-limited: the SDK's own rate-limit error.
try:
    client.responses.create(model=LIMITED_MODEL, input="hi")
    check("all keys out", False, "no error")
except openai.RateLimitError as e:
    check("all keys out", e.status_code == 429 and e.body.get("type") == "rate_limit_error",
          repr(e.body))

finish()
