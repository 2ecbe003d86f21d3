"""The official `openai` Python client's embeddings against `hearth serve`
(run by serve_embeddings.rs with the server's base URL, model id and the
fixture's golden.json, which sentence-transformers wrote)."""

import json
import math
import sys

import openai

base_url, model, golden_path = sys.argv[1], sys.argv[2], sys.argv[3]
golden = json.load(open(golden_path))
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def close(got, want):
    dot = sum(a * b for a, b in zip(got, want))
    norm = math.sqrt(sum(a * a for a in got)) * math.sqrt(sum(b * b for b in want))
    scale = max(abs(x) for x in want)
    worst = max(abs(a - b) for a, b in zip(got, want))
    assert len(got) == len(want), (len(got), len(want))
    assert dot / norm > 0.9999 and worst <= 1e-3 * scale, (dot / norm, worst, scale)


inputs, want = golden["inputs"], golden["embeddings"]
tokens = sum(len(ids) for ids in golden["input_ids"])

# The client asks for base64 by default and decodes it itself.
r = client.embeddings.create(model=model, input=inputs)
assert r.object == "list" and r.model == model
assert [d.index for d in r.data] == list(range(len(inputs)))
assert all(d.object == "embedding" for d in r.data)
for d, w in zip(r.data, want):
    close(d.embedding, w)
assert r.usage.prompt_tokens == tokens and r.usage.total_tokens == tokens, r.usage

# Floats, a single string, and token ids give the same vectors.
f = client.embeddings.create(model=model, input=inputs, encoding_format="float")
for a, b in zip(f.data, r.data):
    assert a.embedding == b.embedding
one = client.embeddings.create(model=model, input=inputs[1], encoding_format="float")
assert len(one.data) == 1 and one.usage.prompt_tokens == len(golden["input_ids"][1])
close(one.data[0].embedding, want[1])
ids = client.embeddings.create(model=model, input=golden["input_ids"][:2], encoding_format="float")
for d, w in zip(ids.data, want[:2]):
    close(d.embedding, w)

# Errors come back as the client's exceptions, naming the field.
try:
    client.embeddings.create(model=model, input=inputs, dimensions=8)
    raise AssertionError("dimensions=8 was accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "dimensions", e.body
try:
    client.embeddings.create(model=model, input=[])
    raise AssertionError("an empty input was accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "input", e.body
try:
    client.embeddings.create(model="nope", input="x")
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError:
    pass
print("ok")
