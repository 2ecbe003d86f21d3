"""Tool calling with the official `openai` Python client against `hearth serve`
on the tiny tool model (run by serve_openai_tools.rs with the server's base
URL and model id): forced calls, plain and streamed, and a round trip."""

import json
import sys

import openai

try:
    import jsonschema
except ImportError:  # validated by hand below
    jsonschema = None

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 8},
        "unit": {"enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"enum": ["utc", "cet"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
tools = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
messages = [{"role": "user", "content": "What is the weather in Paris?"}]


def validate(name, arguments):
    args = json.loads(arguments)
    schema = SCHEMAS[name]
    if jsonschema is not None:
        jsonschema.validate(args, schema)
        return args
    assert set(args) == set(schema["required"]), args
    for k, v in args.items():
        p = schema["properties"][k]
        if "enum" in p:
            assert v in p["enum"], (k, v)
        elif p["type"] == "integer":
            assert isinstance(v, int) and p["minimum"] <= v <= p["maximum"], (k, v)
        else:
            assert isinstance(v, str) and len(v) <= p["maxLength"], (k, v)
    return args


def one_call(resp):
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None, choice.message
    calls = choice.message.tool_calls
    assert len(calls) == 1, calls
    call = calls[0]
    assert call.type == "function" and call.id.startswith("call_"), call
    validate(call.function.name, call.function.arguments)
    return call


def streamed_call(**kw):
    name, args, ids, finish, content = None, "", [], None, ""
    for chunk in client.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        c = chunk.choices[0]
        content += c.delta.content or ""
        for tc in c.delta.tool_calls or []:
            assert tc.index == 0, tc
            if tc.id is not None:
                ids.append(tc.id)
                name = tc.function.name
            args += tc.function.arguments or ""
        finish = c.finish_reason or finish
    assert finish == "tool_calls" and content == "" and len(ids) == 1, (finish, content, ids)
    return name, args


# `required` without parallel calls: exactly one call of either tool.
kw = dict(model=model, messages=messages, tools=tools, tool_choice="required",
          parallel_tool_calls=False, max_tokens=200, temperature=0)
call = one_call(client.chat.completions.create(**kw))
assert streamed_call(**kw) == (call.function.name, call.function.arguments)

# A named function.
kw = dict(model=model, messages=messages, tools=tools, max_tokens=200, temperature=0,
          tool_choice={"type": "function", "function": {"name": "get_weather"}})
call = one_call(client.chat.completions.create(**kw))
assert call.function.name == "get_weather"
assert streamed_call(**kw) == ("get_weather", call.function.arguments)

# Round trip: the call and its result go back; the answer is a message.
follow = client.chat.completions.create(
    model=model,
    messages=messages
    + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp": 21})},
    ],
    tools=tools,
    tool_choice="none",
    max_tokens=5,
    temperature=0,
)
assert follow.choices[0].message.role == "assistant"
assert follow.choices[0].message.tool_calls is None
assert follow.choices[0].finish_reason in ("stop", "length")

# Errors name the field.
try:
    client.chat.completions.create(
        model=model, messages=messages, max_tokens=2,
        tools=[{"type": "function", "function": {"name": "f", "parameters": []}}])
    raise SystemExit("a bad schema was accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "tools[0].function.parameters", e.body

print("ok" + ("" if jsonschema else " (arguments validated by hand: no jsonschema module)"))
