"""The management service in-process: listeners, describe(), the dashboard's home, the sampler."""
from __future__ import annotations

import asyncio
import base64
import re

import aiohttp
import pytest

from usagi.core.broker import Broker
from usagi.mgmt import service as svc_mod
from usagi.mgmt.service import management_service
from usagi.mgmt.stats import Sampler


class FakeServer:
    listeners = [("amqp", "127.0.0.1", 5672)]


def run(coro):
    return asyncio.run(coro)


def make_broker():
    b = Broker()
    b.bootstrap()
    return b


def test_describe_lines_and_port_zero():
    async def main():
        s = await management_service("127.0.0.1", 0, 0)(make_broker(), FakeServer())
        try:
            lines = s.describe()
            assert len(lines) == 2
            m = re.fullmatch(r"Management listener on (\S+):(\d+)", lines[0])
            x = re.fullmatch(r"Metrics listener on (\S+):(\d+)", lines[1])
            assert m and x and m.group(1) == "127.0.0.1" and int(m.group(2)) > 0
            assert m.group(2) != x.group(2)
            async with aiohttp.ClientSession() as http:
                auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
                async with http.get(f"http://127.0.0.1:{m.group(2)}/api/overview", headers=auth) as r:
                    assert r.status == 200
                    assert (await r.json())["listeners"][0]["port"] == 5672
                async with http.get(f"http://127.0.0.1:{x.group(2)}/metrics") as r:
                    assert r.status == 200 and "rabbitmq_queues 0" in await r.text()
        finally:
            await s.stop()
    run(main())


def test_minus_one_disables_the_management_listener():
    async def main():
        s = await management_service("127.0.0.1", -1, 0)(make_broker(), FakeServer())
        try:
            lines = s.describe()
            assert len(lines) == 1 and lines[0].startswith("Metrics listener on 127.0.0.1:")
        finally:
            await s.stop()
    run(main())


@pytest.mark.parametrize("with_index", [True, False])
def test_dashboard_home_is_served_when_present(tmp_path, monkeypatch, with_index):
    if with_index:
        (tmp_path / "index.html").write_text("<html>dashboard</html>")
        (tmp_path / "app.js").write_text("console.log(1)")
    monkeypatch.setattr(svc_mod, "STATIC_DIR", tmp_path)

    async def main():
        s = await management_service("127.0.0.1", 0, -1)(make_broker(), FakeServer())
        try:
            port = s.management_bound_port
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/") as r:
                    if with_index:
                        assert r.status == 200 and await r.text() == "<html>dashboard</html>"
                    else:
                        assert r.status == 404
                async with http.get(f"http://127.0.0.1:{port}/app.js") as r:
                    assert r.status == (200 if with_index else 404)
                async with http.get(f"http://127.0.0.1:{port}/..%2F..%2Fetc%2Fpasswd") as r:
                    assert r.status == 404
        finally:
            await s.stop()
    run(main())


def test_sampler_rates_and_deleted_queue_totals():
    b = make_broker()
    v = b.vhosts["/"]
    q = b.declare_queue(v, "s1")
    s = Sampler(b, 1.0)
    s.sample()
    q.published += 10
    q.delivered += 4
    s.sample()
    assert s.rate(q, "publish") > 0
    assert s.global_totals()["deliver_get"] == 4
    b.delete_queue(q)
    # the deleted queue's deliveries still count in the node totals
    assert s.global_totals()["deliver_get"] == 4
    assert s.queue_history()["publish"] == 10


def test_a_busy_port_fails_the_start_cleanly():
    async def main():
        first = await management_service("127.0.0.1", 0, -1)(make_broker(), FakeServer())
        try:
            port = first.management_bound_port
            with pytest.raises(OSError) as info:
                await management_service("127.0.0.1", 0, port)(make_broker(), FakeServer())
            assert f"metrics listener on 127.0.0.1:{port}" in str(info.value)
        finally:
            await first.stop()
    run(main())
