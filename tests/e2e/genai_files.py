"""End-to-end check of files and context caches through gemini-rotator with Google's
`google-genai` Python SDK (issue #18).

Started by tests/e2e_genai_sdk.rs (`google_genai_files_and_caches`), which runs the real binary
with several keys (each its own Google project at the fake) and two client tokens, and passes:
GR_BASE_URL, GR_TOKEN, GR_OTHER_TOKEN, GR_MODEL, GR_EXPECT (the fake's answer) and GR_ROUNDS
(how many generations use the file). The Rust side then checks that every call naming the
file went to the key that created it and that Google answered no 403; a second file uploaded
right after the first goes to the same key (its upload group), so one call names both.
"""

import io
import os

from google import genai
from google.genai import errors, types

from checks import check, finish

BASE = os.environ["GR_BASE_URL"]
TOKEN = os.environ["GR_TOKEN"]
OTHER = os.environ["GR_OTHER_TOKEN"]
MODEL = os.environ["GR_MODEL"]
EXPECT = os.environ["GR_EXPECT"]
ROUNDS = int(os.environ["GR_ROUNDS"])

OPTIONS = types.HttpOptions(base_url=BASE, api_version="v1beta", timeout=30_000)
client = genai.Client(api_key=TOKEN, http_options=OPTIONS)
other = genai.Client(api_key=OTHER, http_options=OPTIONS)

# files.upload: the resumable protocol, chunks sent to the upload URL the proxy handed out.
# 9 MiB and a bit: two of the SDK's 8 MiB chunks, the second one finalizing.
data = bytes(range(256)) * (36 * 1024) + b"tail"
uploaded = client.files.upload(
    file=io.BytesIO(data),
    config=types.UploadFileConfig(mime_type="text/plain", display_name="notes.txt"),
)
check("upload: a file", uploaded.name is not None and uploaded.name.startswith("files/"), repr(uploaded))
check("upload: its size", uploaded.size_bytes == len(data), repr(uploaded.size_bytes))
check("upload: its uri", uploaded.uri is not None and uploaded.name.split("/")[1] in uploaded.uri,
      repr(uploaded.uri))

got = client.files.get(name=uploaded.name)
check("files.get", got.name == uploaded.name and got.display_name == "notes.txt", repr(got))

for i in range(ROUNDS):
    r = client.models.generate_content(model=MODEL, contents=[uploaded, "Summarise the file."])
    check(f"generate with the file #{i + 1}", r.text == EXPECT, repr(r.text))

# A second file uploaded right after the first joins its upload group (pool.upload_group): the
# two can be named in one request, on the key both were created with.
second = client.files.upload(
    file=io.BytesIO(b"the second notes"),
    config=types.UploadFileConfig(mime_type="text/plain", display_name="more.txt"),
)
r = client.models.generate_content(model=MODEL, contents=[uploaded, second, "Compare the two files."])
check("generate with two files uploaded one after the other", r.text == EXPECT, repr(r.text))
client.files.delete(name=second.name)

# Streaming with the file too.
chunks = list(client.models.generate_content_stream(model=MODEL, contents=[uploaded, "Again."]))
check("stream with the file", "".join(c.text or "" for c in chunks) == EXPECT,
      repr([c.text for c in chunks]))

# caches.create with the file, then generation with the cache.
cache = client.caches.create(
    model=MODEL,
    config=types.CreateCachedContentConfig(
        contents=[types.Content(role="user", parts=[
            types.Part.from_uri(file_uri=uploaded.uri, mime_type="text/plain")])],
        display_name="notes-cache",
        ttl="600s",
    ),
)
check("caches.create", cache.name is not None and cache.name.startswith("cachedContents/"), repr(cache))
for i in range(3):
    r = client.models.generate_content(
        model=MODEL, contents="What does it say?",
        config=types.GenerateContentConfig(cached_content=cache.name))
    check(f"generate with the cache #{i + 1}", r.text == EXPECT, repr(r.text))
updated = client.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="1200s"))
check("caches.update", updated.name == cache.name, repr(updated))
listed = [c.name for c in client.caches.list()]
check("caches.list", listed == [cache.name], repr(listed))

# Lists are the caller's own.
names = [f.name for f in client.files.list()]
check("files.list: mine", names == [uploaded.name], repr(names))

# Another token sees none of it.
try:
    other.files.get(name=uploaded.name)
    check("other token: files.get refused", False, "no error")
except errors.ClientError as e:
    check("other token: files.get refused", e.code == 404, repr(e))
try:
    other.models.generate_content(model=MODEL, contents=[uploaded, "Summarise."])
    check("other token: generate refused", False, "no error")
except errors.ClientError as e:
    check("other token: generate refused", e.code == 404, repr(e))
try:
    other.models.generate_content(model=MODEL, contents="hi",
                                  config=types.GenerateContentConfig(cached_content=cache.name))
    check("other token: cache refused", False, "no error")
except errors.ClientError as e:
    check("other token: cache refused", e.code == 404, repr(e))
check("other token: files.list empty", list(other.files.list()) == [])
check("other token: caches.list empty", list(other.caches.list()) == [])
theirs = other.files.upload(file=io.BytesIO(b"theirs"), config=types.UploadFileConfig(mime_type="text/plain"))
check("other token: own upload", theirs.name != uploaded.name, repr(theirs))
check("files.list: still mine", [f.name for f in client.files.list()] == [uploaded.name])

# The SDK's default API version (v1) reaches the same files.
plain = genai.Client(api_key=TOKEN, http_options=types.HttpOptions(base_url=BASE, timeout=30_000))
check("default api_version: files.get", plain.files.get(name=uploaded.name).name == uploaded.name)
r = plain.models.generate_content(model=MODEL, contents=[uploaded, "Once more."])
check("default api_version: generate with the file", r.text == EXPECT, repr(r.text))

client.caches.delete(name=cache.name)
client.files.delete(name=uploaded.name)
check("files.delete forgets it", list(client.files.list()) == [])
try:
    client.files.get(name=uploaded.name)
    check("deleted file gone", False, "no error")
except errors.ClientError as e:
    check("deleted file gone", e.code == 404, repr(e))

finish()
