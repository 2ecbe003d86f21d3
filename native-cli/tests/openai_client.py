"""The official `openai` Python client against `hearth serve` (run by
serve_openai_client.rs with the server's base URL and model id)."""

import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

assert [m.id for m in client.models.list()] == [model]

# Legacy completions, plain and streamed: the same greedy text.
done = client.completions.create(
    model=model, prompt="hello there", max_tokens=12, temperature=0, n=2, logprobs=2
)
assert done.object == "text_completion"
assert len(done.choices) == 2 and done.choices[0].text == done.choices[1].text
assert done.choices[0].finish_reason in ("stop", "length")
assert len(done.choices[0].logprobs.tokens) == done.usage.completion_tokens // 2
text = "".join(
    c.choices[0].text
    for c in client.completions.create(
        model=model, prompt="hello there", max_tokens=12, temperature=0, stream=True
    )
    if c.choices
)
assert text == done.choices[0].text, (text, done.choices[0].text)

# Chat, plain and streamed with usage.
chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    max_completion_tokens=10,
    temperature=0,
    seed=7,
    logprobs=True,
    top_logprobs=2,
    extra_body={"ignore_eos": True, "top_k": 5},
)
assert chat.choices[0].message.role == "assistant"
assert chat.choices[0].finish_reason == "length"
assert len(chat.choices[0].logprobs.content) == 10
assert chat.usage.completion_tokens == 10
pieces, usage = [], None
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    max_completion_tokens=10,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
    extra_body={"ignore_eos": True},
):
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        pieces.append(c.delta.content or "")
assert "".join(pieces) == chat.choices[0].message.content
assert usage is not None and usage.completion_tokens == 10

# Errors map to the client's exception types.
try:
    client.completions.create(model="no-such-model", prompt="a")
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body
try:
    client.completions.create(model=model, prompt="a", max_tokens=-1)
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.body["param"] == "max_tokens", e.body

print("openai client: ok")
