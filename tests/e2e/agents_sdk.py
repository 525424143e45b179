"""End-to-end check with the OpenAI Agents SDK (`openai-agents`) against a running
gemini-rotator: an agent with a function tool, run whole and streamed, over the Responses API.

Started by tests/e2e_responses_sdk.rs (`agents_sdk`), which passes GR_BASE_URL, GR_TOKEN and
GR_TOOL_MODEL (a Gemini 3 model scripted to call get_weather and then answer, twice; the fake
validates thought signatures as Google does). Prints one line per check and exits non-zero on
the first failure.
"""

import asyncio
import os

from agents import (
    Agent,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from checks import check, finish

BASE = os.environ["GR_BASE_URL"]
TOKEN = os.environ["GR_TOKEN"]
TOOL_MODEL = os.environ["GR_TOOL_MODEL"]

set_default_openai_client(
    AsyncOpenAI(base_url=BASE + "/v1", api_key=TOKEN, max_retries=0, timeout=20)
)
set_default_openai_api("responses")
set_tracing_disabled(True)

calls = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    calls.append(city)
    return f"21C in {city}"


agent = Agent(name="Weather", instructions="Answer with the tool.", model=TOOL_MODEL,
              tools=[get_weather])


async def main():
    result = await Runner.run(agent, "Weather in Paris?")
    check("agent tool called", calls == ["Paris"], repr(calls))
    check("agent final output", result.final_output == "21 degrees and sunny.",
          repr(result.final_output))

    streamed = Runner.run_streamed(agent, "Weather in Oslo?")
    kinds = []
    async for event in streamed.stream_events():
        kinds.append(event.type)
    check("streamed tool called", calls == ["Paris", "Oslo"], repr(calls))
    check("streamed final output", streamed.final_output == "Cold in Oslo.",
          repr(streamed.final_output))
    check("streamed raw events", "raw_response_event" in kinds, repr(kinds))


asyncio.run(main())
finish()
