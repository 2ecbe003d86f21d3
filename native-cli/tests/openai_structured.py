"""Structured output through the official `openai` Python client against
`hearth serve` on the default model (run by serve_structured.rs with the
server's base URL and model id): every answer under a JSON schema parses
and validates against it (jsonschema), streamed or not; json_object, a
GBNF grammar and completions with response_format too; and the 400s of
schemas and grammars that do not compile."""

import json
import re
import sys

import jsonschema
import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def name(s):
    return {"type": "string", "minLength": 1, "maxLength": s}


# (what to ask, schema): strings bounded so that a 135M model finishes.
CASES = [
    (
        "Give the name and age of a famous scientist as JSON.",
        {
            "type": "object",
            "properties": {
                "name": name(24),
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
            },
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    ),
    (
        "Describe Paris as JSON: its country and the river through it.",
        {
            "type": "object",
            "properties": {
                "city": {
                    "type": "object",
                    "properties": {"country": name(16), "river": name(16)},
                    "required": ["country", "river"],
                    "additionalProperties": False,
                },
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    ),
    (
        "List two or three colors of the rainbow as JSON.",
        {
            "type": "object",
            "properties": {
                "colors": {"type": "array", "items": name(10), "minItems": 2, "maxItems": 3},
            },
            "required": ["colors"],
            "additionalProperties": False,
        },
    ),
    (
        "Is the sky blue? Answer as JSON with a confidence from 1 to 10.",
        {
            "type": "object",
            "properties": {
                "answer": {"enum": ["yes", "no", "maybe"]},
                "confidence": {"type": "integer", "minimum": 1, "maximum": 10},
                "temperature": {"type": "number", "minimum": -50, "maximum": 60},
            },
            "required": ["answer", "confidence"],
            "additionalProperties": False,
        },
    ),
    (
        "How many legs does a cat have? Answer as JSON.",
        {
            "type": "object",
            "properties": {
                "legs": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 8}, name(8)]},
                "sure": {"type": "boolean"},
            },
            "required": ["legs", "sure"],
            "additionalProperties": False,
        },
    ),
    (
        "Three small whole numbers as a JSON array.",
        {"type": "array", "items": {"type": "integer", "minimum": -9, "maximum": 9}, "minItems": 1, "maxItems": 4},
    ),
]


def chat(ask, max_tokens=120, **kw):
    return dict(
        model=model,
        messages=[{"role": "user", "content": ask}],
        max_tokens=max_tokens,
        temperature=0,
        **kw,
    )


def streamed(**req):
    text, reason = [], None
    for chunk in client.chat.completions.create(stream=True, **req):
        for c in chunk.choices:
            text.append(c.delta.content or "")
            reason = c.finish_reason or reason
    return "".join(text), reason


for i, (ask, schema) in enumerate(CASES):
    fmt = {"type": "json_schema", "json_schema": {"name": f"case_{i}", "schema": schema, "strict": True}}
    done = client.chat.completions.create(**chat(ask, response_format=fmt))
    text = done.choices[0].message.content
    assert done.choices[0].finish_reason == "stop", (ask, text, done.choices[0].finish_reason)
    jsonschema.validate(json.loads(text), schema)
    s_text, s_reason = streamed(**chat(ask, response_format=fmt))
    assert s_reason == "stop", (ask, s_text)
    jsonschema.validate(json.loads(s_text), schema)
    # Greedy: the stream is the same answer.
    assert s_text == text, (s_text, text)
    print(f"schema {i}: {text}")

# json_object: any JSON object.
done = client.chat.completions.create(
    **chat("Describe a cat as a JSON object with its name and color.", response_format={"type": "json_object"})
)
text = done.choices[0].message.content
assert done.choices[0].finish_reason == "stop", text
assert isinstance(json.loads(text), dict), text
print(f"json_object: {text}")

# A GBNF grammar (llama.cpp's `grammar` field), streamed and not.
grammar = r'''
root   ::= answer ", " reason "."
answer ::= "Yes" | "No"   # the verdict
reason ::= [a-z] [a-z ]{0,30}
'''
pattern = re.compile(r"(Yes|No), [a-z][a-z ]{0,30}\.")
req = chat("Is water wet? Answer yes or no, with a short reason.", extra_body={"grammar": grammar})
done = client.chat.completions.create(**req)
text = done.choices[0].message.content
assert done.choices[0].finish_reason == "stop", text
assert pattern.fullmatch(text), text
s_text, s_reason = streamed(**req)
assert s_reason == "stop" and s_text == text, (s_text, text)
print(f"grammar: {text}")

# Completions take response_format too.
schema = CASES[0][1]
done = client.completions.create(
    model=model,
    prompt="A famous scientist as JSON: ",
    max_tokens=80,
    temperature=0,
    extra_body={"response_format": {"type": "json_schema", "json_schema": {"name": "sci", "schema": schema}}},
)
text = done.choices[0].text
assert done.choices[0].finish_reason == "stop", text
jsonschema.validate(json.loads(text), schema)
print(f"completions: {text}")


def bad_request(want_param, want_text, **req):
    for stream in (False, True):
        try:
            r = client.chat.completions.create(stream=stream, **chat("hi", max_tokens=8, **req))
            if stream:
                list(r)
        except openai.BadRequestError as e:
            err = e.body.get("error", e.body) if isinstance(e.body, dict) else {}
            assert e.status_code == 400
            assert err.get("param") == want_param, (err, want_param)
            assert want_text in err.get("message", ""), (err, want_text)
        else:
            raise AssertionError(f"no 400 for {req} (stream={stream})")


def schema_fmt(schema):
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}


# A schema llguidance cannot compile: a type that does not exist.
bad_request("response_format", "strnig", **schema_fmt({"type": "object", "properties": {"a": {"type": "strnig"}}}))
# A keyword it does not implement.
bad_request("response_format", "uniqueItems", **schema_fmt({"type": "array", "uniqueItems": True}))
# A grammar that does not parse, and one with an undefined rule.
bad_request("grammar", "line 1, column 14", extra_body={"grammar": 'root ::= "a" ]'})
bad_request("grammar", "`item` is used but not defined", extra_body={"grammar": 'root ::= "a" item'})
# Both at once.
bad_request(
    "grammar",
    "cannot be combined",
    response_format={"type": "json_object"},
    extra_body={"grammar": 'root ::= "a"'},
)
# json_schema without its schema.
bad_request(
    "response_format.json_schema.schema",
    "needs a schema",
    response_format={"type": "json_schema", "json_schema": {"name": "x"}},
)
print("ok")
