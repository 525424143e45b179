"""End-to-end check of the Live API through gemini-rotator with Google's `google-genai` Python
SDK (issue #18): `client.aio.live.connect` for one text turn, on the client token and on an
ephemeral token minted through the proxy (`client.aio.auth_tokens.create`).

Started by tests/e2e_genai_sdk.rs (`google_genai_live`), which runs the real binary in front of
the fake Gemini and passes GR_PROXY (the proxy's host:port), GR_TOKEN, GR_MODEL and GR_EXPECT
(the answers the fake may give, one per pool key, separated by `|`).

google-genai always dials `wss://` for Live, whatever the base URL's scheme, so a deployment puts
TLS in front of the proxy. This script does the same: a small TLS terminator on 127.0.0.1 (a
self-signed certificate made here, trusted through SSL_CERT_FILE, which the SDK reads) that
forwards bytes to the proxy. Everything else is the SDK as users run it.
"""

import asyncio
import datetime
import ipaddress
import os
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from checks import check, finish

PROXY_HOST, PROXY_PORT = os.environ["GR_PROXY"].rsplit(":", 1)
TOKEN = os.environ["GR_TOKEN"]
MODEL = os.environ["GR_MODEL"]
EXPECT = set(os.environ["GR_EXPECT"].split("|"))


def self_signed(folder):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(folder, "cert.pem")
    key_path = os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def terminate(client_reader, client_writer):
    up_reader, up_writer = await asyncio.open_connection(PROXY_HOST, int(PROXY_PORT))
    await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))


async def one_turn(client, label):
    from google.genai import types

    texts = []
    usage = None
    async with client.aio.live.connect(model=MODEL, config={"response_modalities": ["TEXT"]}) as session:
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="Hello there")]),
            turn_complete=True,
        )
        async for message in session.receive():
            if message.text:
                texts.append(message.text)
            if message.usage_metadata:
                usage = message.usage_metadata
            if message.server_content and message.server_content.turn_complete:
                break
    text = "".join(texts)
    check(f"{label}: the model's text", text in EXPECT, repr(text))
    check(f"{label}: usage metadata", usage is not None and (usage.prompt_token_count or 0) > 0, repr(usage))


async def main():
    import ssl

    folder = tempfile.mkdtemp()
    cert_path, key_path = self_signed(folder)
    os.environ["SSL_CERT_FILE"] = cert_path
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, key_path)
    server = await asyncio.start_server(terminate, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    base = f"https://127.0.0.1:{port}"

    from google import genai

    client = genai.Client(api_key=TOKEN, http_options={"base_url": base})
    await asyncio.wait_for(one_turn(client, "live with the client token"), 60)

    v1beta = genai.Client(api_key=TOKEN, http_options={"base_url": base, "api_version": "v1beta"})
    await asyncio.wait_for(one_turn(v1beta, "live on v1beta"), 60)

    # An ephemeral token minted through the pool, then a session with it (v1alpha, Constrained).
    minted = await client.aio.auth_tokens.create(config={
        "uses": 1,
        "live_connect_constraints": {"model": MODEL, "config": {"response_modalities": ["TEXT"]}},
        "http_options": {"api_version": "v1alpha"},
    })
    check("auth_tokens.create: a token", (minted.name or "").startswith("auth_tokens/"), repr(minted))
    ephemeral = genai.Client(api_key=minted.name, http_options={"base_url": base, "api_version": "v1alpha"})
    await asyncio.wait_for(one_turn(ephemeral, "live with the ephemeral token"), 60)

    wrong = genai.Client(api_key="sk-TEST-wrong-token-0000000", http_options={"base_url": base})
    refused = None
    try:
        async with wrong.aio.live.connect(model=MODEL, config={"response_modalities": ["TEXT"]}):
            pass
    except Exception as e:  # websockets' InvalidStatus: the proxy's 401
        refused = e
    check("a wrong token is refused", refused is not None and "401" in str(refused), repr(refused))

    server.close()
    finish()


asyncio.run(main())
