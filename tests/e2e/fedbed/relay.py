"""A host's published ports, inside the federation test bed: listen on each given
port and pipe every connection, TLS untouched, to a container's port, as Docker's
port publishing does on a real host (443 -> nginx's listener). Runs in a
container on the bed network with the host's names as aliases.

    relay.py 443=synapse-fed-a-nginx:8448 [...]
"""

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def forward(host: str, port: int):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()  # the target is down: the client sees a closed connection
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    return handle


async def main(specs: list[str]) -> None:
    servers = []
    for spec in specs:
        listen, target = spec.split("=")
        host, port = target.rsplit(":", 1)
        servers.append(await asyncio.start_server(forward(host, int(port)), "0.0.0.0", int(listen)))
    print("relaying", " ".join(specs), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
