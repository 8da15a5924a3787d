"""An S3 endpoint for tests (see s3.rs): moto's server on a loopback port, behind a TLS front.

  s3_server.py serve CERT KEY                   print the TLS port, serve until stdin closes
  s3_server.py create-bucket ENDPOINT CA BUCKET
  s3_server.py keys ENDPOINT CA BUCKET PREFIX   print the keys under PREFIX, one a line

The front ends every connection with a TLS close_notify: moto's own TLS (werkzeug's) closes
without one, which pgBackRest takes for a truncated response and retries until it fails.
"""

import asyncio
import os
import socket
import ssl
import sys
import threading


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def serve(cert, key):
    from moto.server import ThreadedMotoServer

    backend = free_port()
    ThreadedMotoServer(ip_address="127.0.0.1", port=backend, verbose=False).start()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def relay(client_reader, client_writer):
        try:
            moto_reader, moto_writer = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, moto_writer), pipe(moto_reader, client_writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=tls)
    print(server.sockets[0].getsockname()[1], flush=True)
    # The test process holds stdin: when it goes, however it goes, so does this server.
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    await server.serve_forever()


def client(endpoint, ca):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=f"https://{endpoint}",
        region_name="us-east-1",
        verify=ca,
        config=Config(s3={"addressing_style": "path"}),
    )


def main(command, *args):
    if command == "serve":
        asyncio.run(serve(*args))
    elif command == "create-bucket":
        endpoint, ca, bucket = args
        client(endpoint, ca).create_bucket(Bucket=bucket)
    elif command == "keys":
        endpoint, ca, bucket, prefix = args
        pages = client(endpoint, ca).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                print(item["Key"])
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(*sys.argv[1:])
