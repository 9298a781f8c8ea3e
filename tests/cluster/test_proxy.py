"""Forwarding client connections from a follower to the leader, with the PROXY v1 header."""
from __future__ import annotations

import asyncio

import pytest

from usagi.cluster.proxy import Forwarder
from usagi.server.proxy_protocol import ProxyHeaderError, parse_proxy_header, proxy_header


def test_header_round_trip_and_refusals():
    h = proxy_header(("10.0.0.7", 40000), ("10.0.0.1", 5672))
    assert h == b"PROXY TCP4 10.0.0.7 10.0.0.1 40000 5672\r\n"
    assert parse_proxy_header(h + b"AMQP") == (len(h), ("10.0.0.7", 40000))
    assert parse_proxy_header(b"PROXY TCP4 10.0.0.7") == (0, None)
    assert parse_proxy_header(proxy_header(("::1", 1), ("::1", 2)))[1] == ("::1", 1)
    for bad in (b"AMQP\x00\x00\x09\x01\r\n", b"PROXY TCP4 nothost 1.2.3.4 1 2\r\n",
                b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n", b"PROXY " + b"x" * 200):
        with pytest.raises(ProxyHeaderError):
            parse_proxy_header(bad)


def test_forwarding_with_header_both_ways_and_close():
    async def go():
        got = []

        async def leader(reader, writer):
            line = await reader.readline()
            got.append(line)
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data.upper())
            writer.close()
        srv = await asyncio.start_server(leader, "127.0.0.1", 0)
        lport = srv.sockets[0].getsockname()[1]
        fwd = Forwarder(lambda: ("127.0.0.1", lport))
        loop = asyncio.get_running_loop()
        fsrv = await loop.create_server(fwd.factory, "127.0.0.1", 0)
        fport = fsrv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", fport)
        w.write(b"hello ")
        w.write(b"world" * 100000)                 # 500 KB through the pipe
        await w.drain()
        data = b""
        while len(data) < 6 + 500000:
            data += await asyncio.wait_for(r.read(65536), 5)
        assert data == (b"hello " + b"world" * 100000).upper()
        me = w.get_extra_info("sockname")
        assert got[0] == f"PROXY TCP4 {me[0]} 127.0.0.1 {me[1]} {fport}\r\n".encode()
        fwd.close_all()                             # the leader changed: forwarded connections end
        assert await asyncio.wait_for(r.read(), 5) == b""
        fsrv.close()
        srv.close()
    asyncio.run(go())


def test_no_leader_closes_after_the_wait():
    async def go():
        fwd = Forwarder(lambda: None, wait_for_leader=0.5)
        loop = asyncio.get_running_loop()
        fsrv = await loop.create_server(fwd.factory, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", fsrv.sockets[0].getsockname()[1])
        w.write(b"AMQP\x00\x00\x09\x01")
        t0 = loop.time()
        assert await asyncio.wait_for(r.read(), 5) == b""
        assert 0.4 <= loop.time() - t0 < 3
        fsrv.close()
    asyncio.run(go())
