"""usagictl against a management API (RabbitMQ's or Usagi's): output, exit codes, effects.

Expected texts are what rabbitmqctl 3.10 prints for the same command.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from ctlutil import RABBITMQCTL, run_ctl, run_rabbitmqctl, unique

pika = pytest.importorskip("pika")


def poll_ctl(mgmt, args, pred, timeout: float = 20.0):
    """Run usagictl until pred(result) holds (management stats lag on RabbitMQ); return the
    last result either way so that the caller's assert shows the real output."""
    deadline = time.monotonic() + timeout
    while True:
        r = mgmt.ctl(*args)
        if pred(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def lines(text: str) -> list[str]:
    return text.splitlines()


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def publish(url: str, queue: str, n: int, durable: bool = False):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.queue_declare(queue, durable=durable)
        for i in range(n):
            ch.basic_publish("", queue, f"m{i}".encode())
        # a round trip, so that the publishes have been handled before we look
        ch.queue_declare(queue, passive=True)
    finally:
        conn.close()


# --------------------------------------------------------------------------- the seed session

def test_seed_list_queues_hello(mgmt):
    """pika publishes to `hello`; usagictl list_queues prints `hello\\t1` under `name\\tmessages`."""
    st, info = mgmt.api("GET", "/api/queues/%2F/hello")
    if st == 200 and not mgmt.is_usagi and (info.get("consumers") or info.get("messages")):
        pytest.skip("queue 'hello' in vhost / is in use on the shared broker")
    mgmt.api("DELETE", "/api/queues/%2F/hello")
    mgmt.cleanups.append(("DELETE", "/api/queues/%2F/hello"))
    publish(mgmt.amqp("/"), "hello", 1)

    r = poll_ctl(mgmt, ["list_queues"], lambda r: "hello\t1" in lines(r.stdout))
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    assert out[:3] == ["Timeout: 60.0 seconds ...", "Listing queues for vhost / ...", "name\tmessages"]
    assert "hello\t1" in out[3:]
    assert r.stderr == ""

    r = mgmt.ctl("list_queues", "-q")
    assert r.returncode == 0
    out = lines(r.stdout)
    assert out[0] == "name\tmessages"
    assert "hello\t1" in out
    assert not any(l.startswith(("Listing", "Timeout")) for l in out)

    r = mgmt.ctl("--quiet", "list_queues")          # options before the command too
    assert lines(r.stdout)[0] == "name\tmessages" and "hello\t1" in lines(r.stdout)

    r = mgmt.ctl("list_queues", "-s")
    assert "hello\t1" in lines(r.stdout)
    assert "name\tmessages" not in lines(r.stdout) and "Listing" not in r.stdout

    r = mgmt.ctl("list_queues", "--no-table-headers")
    out = lines(r.stdout)
    assert out[:2] == ["Timeout: 60.0 seconds ...", "Listing queues for vhost / ..."]
    assert "hello\t1" in out and "name\tmessages" not in out

    r = mgmt.ctl("list_queues", "-q", "name", "messages", "consumers", "durable")
    out = lines(r.stdout)
    assert out[0] == "name\tmessages\tconsumers\tdurable"
    assert "hello\t1\t0\tfalse" in out

    r = mgmt.ctl("list_queues", "name,messages", "-n", "rabbit@nowhere")   # -n is ignored
    assert r.returncode == 0 and "hello\t1" in lines(r.stdout)

    r = mgmt.ctl("list_queues", "--formatter", "json")
    assert r.returncode == 0
    assert r.stdout.startswith("[\n") and r.stdout.endswith("]\n")
    rows = json.loads(r.stdout)
    assert {"name": "hello", "messages": 1} in rows


def test_seed_list_queues_in_vhost(mgmt):
    vhost = mgmt.vhost()
    publish(mgmt.amqp(vhost), "hello", 2)
    for args in (["-p", vhost], ["--vhost", vhost], [f"--vhost={vhost}"]):
        r = poll_ctl(mgmt, ["list_queues", *args], lambda r: "hello\t2" in lines(r.stdout))
        assert r.returncode == 0, r.stderr
        assert lines(r.stdout) == ["Timeout: 60.0 seconds ...", f"Listing queues for vhost {vhost} ...",
                                   "name\tmessages", "hello\t2"]
    r = mgmt.ctl("list_queues", "-q", "-p", vhost)
    assert lines(r.stdout) == ["name\tmessages", "hello\t2"]
    r = mgmt.ctl("-p", vhost, "list_queues", "-s", "name", "durable", "auto_delete", "arguments",
                 "exclusive")
    assert lines(r.stdout) == ["hello\tfalse\tfalse\t[]\tfalse"]
    # the vhost's queue is not listed for "/"
    r = mgmt.ctl("list_queues", "-s")
    assert "hello\t2" not in lines(r.stdout)
    # an unknown vhost lists nothing, like rabbitmqctl
    r = mgmt.ctl("list_queues", "-p", unique("nosuch"))
    assert r.returncode == 0 and len(lines(r.stdout)) == 2 and r.stdout.startswith("Timeout:")


# --------------------------------------------------------------------------- queues

def test_purge_and_delete_queue(mgmt):
    vhost = mgmt.vhost()
    url = mgmt.amqp(vhost)
    publish(url, "q1", 3)
    publish(url, "q2", 2)
    r = mgmt.ctl("purge_queue", "-p", vhost, "q1")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"Purging queue 'q1' in vhost '{vhost}' ...\n", "")
    r = poll_ctl(mgmt, ["list_queues", "-s", "-p", vhost], lambda r: "q1\t0" in lines(r.stdout))
    assert "q1\t0" in lines(r.stdout)

    r = mgmt.ctl("purge_queue", "-p", vhost, "nosuchq")
    assert (r.returncode, r.stderr) == (69, "Error:\nnot_found\n")

    poll_ctl(mgmt, ["list_queues", "-s", "-p", vhost], lambda r: "q2\t2" in lines(r.stdout))
    r = mgmt.ctl("delete_queue", "-p", vhost, "q2", "--if-empty")
    assert r.stdout == f"Deleting queue 'q2' on vhost '{vhost}' if queue is empty ...\n"
    assert (r.returncode, r.stderr) == (64, "Error:\nQueue is not empty\n")
    r = mgmt.ctl("delete_queue", "-p", vhost, "q2")
    assert r.returncode == 0, r.stderr
    assert lines(r.stdout) == [f"Deleting queue 'q2' on vhost '{vhost}' ...",
                               "Queue was successfully deleted with 2 ready messages"]
    r = mgmt.ctl("delete_queue", "-p", vhost, "q2", "-e", "-u")
    assert r.stdout == (f"Deleting queue 'q2' on vhost '{vhost}' if queue is empty and if queue is "
                        "unused ...\n")
    assert (r.returncode, r.stderr) == (64, "Error:\nQueue not found\n")
    r = mgmt.ctl("delete_queue", "-q", "-p", vhost, "q1")
    assert (r.returncode, r.stdout) == (0, "Queue was successfully deleted with 0 ready messages\n")
    st, _ = mgmt.api("GET", f"/api/queues/{q(vhost)}/q1")
    assert st == 404


def test_exchanges_and_bindings(mgmt):
    vhost = mgmt.vhost()
    conn = pika.BlockingConnection(pika.URLParameters(mgmt.amqp(vhost)))
    try:
        ch = conn.channel()
        ch.exchange_declare("x1", "topic")
        ch.queue_declare("qb", durable=True, arguments={"x-max-length": 100})
        ch.queue_bind("qb", "x1", "a.#", arguments={"foo": "bar"})
    finally:
        conn.close()
    r = mgmt.ctl("list_exchanges", "-p", vhost)
    assert r.returncode == 0
    out = lines(r.stdout)
    assert out[:2] == [f"Listing exchanges for vhost {vhost} ...", "name\ttype"]
    assert {"x1\ttopic", "\tdirect", "amq.topic\ttopic", "amq.fanout\tfanout"} <= set(out[2:])
    r = mgmt.ctl("list_exchanges", "-p", vhost, "-s", "name", "type", "durable", "auto_delete",
                 "internal", "arguments")
    assert "x1\ttopic\tfalse\tfalse\tfalse\t[]" in lines(r.stdout)
    r = mgmt.ctl("list_bindings", "-p", vhost)
    out = lines(r.stdout)
    assert out[:2] == [f"Listing bindings for vhost {vhost}...",
                       "source_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments"]
    assert set(out[2:]) == {"\texchange\tqb\tqueue\tqb\t[]",
                            'x1\texchange\tqb\tqueue\ta.#\t[{"foo","bar"}]'}
    r = mgmt.ctl("list_queues", "-p", vhost, "-s", "name", "durable", "arguments")
    assert lines(r.stdout) == ['qb\ttrue\t[{"x-max-length",100}]']
    r = mgmt.ctl("list_queues", "-p", vhost, "--formatter", "json", "name", "arguments")
    assert json.loads(r.stdout) == [{"name": "qb", "arguments": [["x-max-length", "signedint", 100]]}]


# --------------------------------------------------------------------------- users

def test_user_lifecycle(mgmt):
    u = mgmt.user()
    r = mgmt.ctl("add_user", u, "pw1")
    assert (r.returncode, r.stderr) == (0, "")
    assert lines(r.stdout) == [
        f'Adding user "{u}" ...',
        "Done. Don't forget to grant the user permissions to some virtual hosts! See 'rabbitmqctl "
        "help set_permissions' to learn more."]
    r = mgmt.ctl("add_user", u, "pw1")
    assert (r.returncode, r.stdout, r.stderr) == (70, f'Adding user "{u}" ...\n',
                                                  f'Error:\nUser "{u}" already exists\n')

    r = mgmt.ctl("authenticate_user", u, "pw1")
    assert (r.returncode, r.stdout) == (0, f'Authenticating user "{u}" ...\nSuccess\n')
    r = mgmt.ctl("authenticate_user", u, "wrong")
    assert r.returncode == 65
    assert r.stderr == (f'Error:\nError: failed to authenticate user "{u}"\n'
                        f"user '{u}' - invalid credentials\n")

    r = mgmt.ctl("change_password", u, "pw2")
    assert (r.returncode, r.stdout) == (0, f'Changing password for user "{u}" ...\n')
    assert mgmt.ctl("authenticate_user", u, "pw1").returncode == 65
    assert mgmt.ctl("authenticate_user", "-q", u, "pw2").stdout == "Success\n"

    r = mgmt.ctl("set_user_tags", u, "management", "monitoring")
    assert (r.returncode, r.stdout) == (0, f'Setting tags for user "{u}" to [management, monitoring] ...\n')
    r = mgmt.ctl("list_users")
    out = lines(r.stdout)
    assert out[:2] == ["Listing users ...", "user\ttags"]
    assert f"{u}\t[management, monitoring]" in out
    assert mgmt.ctl("authenticate_user", u, "pw2").returncode == 0, "set_user_tags kept the password"
    r = mgmt.ctl("list_users", "--formatter", "json")
    assert {"user": u, "tags": ["management", "monitoring"]} in json.loads(r.stdout)
    r = mgmt.ctl("set_user_tags", u)
    assert r.stdout == f'Setting tags for user "{u}" to [] ...\n'
    assert f"{u}\t[]" in lines(mgmt.ctl("list_users", "-s").stdout)

    r = mgmt.ctl("clear_password", u)
    assert (r.returncode, r.stdout) == (0, f'Clearing password for user "{u}" ...\n')
    assert mgmt.ctl("authenticate_user", u, "pw2").returncode == 65

    r = mgmt.ctl("delete_user", u)
    assert (r.returncode, r.stdout, r.stderr) == (0, f'Deleting user "{u}" ...\n', "")
    r = mgmt.ctl("delete_user", u)
    assert (r.returncode, r.stderr) == (67, f'Error:\nUser "{u}" does not exist\n')
    for args in (["change_password", u, "x"], ["set_user_tags", u, "a"]):
        r = mgmt.ctl(*args)
        assert (r.returncode, r.stderr) == (67, f'Error:\nUser "{u}" does not exist\n'), args


def test_add_user_quiet(mgmt):
    u = mgmt.user()
    r = mgmt.ctl("add_user", "-q", u, "pw")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    st, info = mgmt.api("GET", f"/api/users/{u}")
    assert st == 200 and info["tags"] in ([], "")


# --------------------------------------------------------------------------- vhosts, permissions

def test_vhosts_and_permissions(mgmt):
    v = unique("ctl-vh")
    u = mgmt.user()
    mgmt.cleanups.append(("DELETE", f"/api/vhosts/{v}"))
    r = mgmt.ctl("add_vhost", v)
    assert (r.returncode, r.stdout) == (0, f'Adding vhost "{v}" ...\n')
    assert mgmt.ctl("add_vhost", v).returncode == 0            # exists: no error, like rabbitmqctl
    r = mgmt.ctl("list_vhosts")
    assert lines(r.stdout)[:2] == ["Listing vhosts ...", "name"] and v in lines(r.stdout)
    assert f"{v}\tfalse" in lines(mgmt.ctl("list_vhosts", "-q", "name", "tracing").stdout)
    # a new vhost grants nobody anything (rabbitmqctl semantics)
    r = mgmt.ctl("list_permissions", "-p", v)
    assert (r.returncode, r.stdout) == (0, f'Listing permissions for vhost "{v}" ...\n\n')

    mgmt.ctl("add_user", "-q", u, "pw")
    r = mgmt.ctl("set_permissions", "-p", v, u, "^conf", ".*", "^read")
    assert (r.returncode, r.stdout, r.stderr) == (
        0, f'Setting permissions for user "{u}" in vhost "{v}" ...\n', "")
    r = mgmt.ctl("list_permissions", "-p", v)
    assert lines(r.stdout) == [f'Listing permissions for vhost "{v}" ...', "user\tconfigure\twrite\tread",
                               f"{u}\t^conf\t.*\t^read"]
    r = mgmt.ctl("list_user_permissions", u)
    assert lines(r.stdout) == [f'Listing permissions for user "{u}" ...', "vhost\tconfigure\twrite\tread",
                               f"{v}\t^conf\t.*\t^read"]
    r = mgmt.ctl("list_user_permissions", "--formatter", "json", u)
    assert json.loads(r.stdout) == [{"vhost": v, "configure": "^conf", "write": ".*", "read": "^read"}]

    nov, nou = unique("nosuch"), unique("nosuch")
    r = mgmt.ctl("set_permissions", "-p", nov, u, ".*", ".*", ".*")
    assert (r.returncode, r.stderr) == (69, f"Error:\nVirtual host {nov} does not exist\n")
    r = mgmt.ctl("set_permissions", "-p", v, nou, ".*", ".*", ".*")
    assert (r.returncode, r.stderr) == (67, f"Error:\nUser {nou} does not exist\n")
    r = mgmt.ctl("list_permissions", "-p", nov)
    assert (r.returncode, r.stderr) == (65, f"Virtual host '{nov}' does not exist\n")
    r = mgmt.ctl("list_user_permissions", nou)
    assert (r.returncode, r.stderr) == (69, f'Error:\n{{:no_such_user, "{nou}"}}\n')

    r = mgmt.ctl("clear_permissions", "-p", v, u)
    assert (r.returncode, r.stdout) == (0, f'Clearing permissions for user "{u}" in vhost "{v}" ...\n')
    assert mgmt.ctl("clear_permissions", "-p", v, u).returncode == 0      # again: still fine
    r = mgmt.ctl("list_user_permissions", "-q", u)
    assert r.stdout == "\n"

    r = mgmt.ctl("delete_vhost", v)
    assert (r.returncode, r.stdout) == (0, f'Deleting vhost "{v}" ...\n')
    r = mgmt.ctl("delete_vhost", v)
    assert (r.returncode, r.stderr) == (65, f"Virtual host '{v}' does not exist\n")


def test_add_vhost_with_metadata(mgmt):
    v = unique("ctl-vh")
    mgmt.cleanups.append(("DELETE", f"/api/vhosts/{v}"))
    r = mgmt.ctl("add_vhost", v, "--description", "a test vhost", "--tags", "a,b")
    assert r.returncode == 0, r.stderr
    r = mgmt.ctl("list_vhosts", "-s", "name", "description", "tags")
    assert f"{v}\ta test vhost\t[a, b]" in lines(r.stdout)


# --------------------------------------------------------------------------- policies, limits

def test_policies(mgmt):
    v = mgmt.vhost()
    r = mgmt.ctl("set_policy", "-p", v, "p1", r"^ha\.", '{"max-length":10}', "--priority", "5",
                 "--apply-to", "queues")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == (f'Setting policy "p1" for pattern "^ha\\." to "{{"max-length":10}}" with priority '
                        f'"5" for vhost "{v}" ...\n')
    r = mgmt.ctl("set_policy", "-p", v, "p2", "^x", '{"max-length":10}')
    assert r.returncode == 0 and 'with priority "0"' in r.stdout
    r = mgmt.ctl("list_policies", "-p", v)
    out = lines(r.stdout)
    assert out[:2] == [f'Listing policies for vhost "{v}" ...',
                       "vhost\tname\tpattern\tapply-to\tdefinition\tpriority"]
    assert set(out[2:]) == {f'{v}\tp1\t^ha\\.\tqueues\t{{"max-length":10}}\t5',
                            f'{v}\tp2\t^x\tall\t{{"max-length":10}}\t0'}
    rows = json.loads(mgmt.ctl("list_policies", "-p", v, "--formatter", "json").stdout)
    assert {"vhost": v, "name": "p1", "pattern": r"^ha\.", "apply-to": "queues",
            "definition": '{"max-length":10}', "priority": 5} in rows

    r = mgmt.ctl("set_policy", "-p", v, "p3", "^x", "notjson")
    assert (r.returncode, r.stderr) == (69, "Error:\nJSON decoding error. Reason: badarg\n")
    r = mgmt.ctl("set_policy", "-p", v, "p3", "^x", '{"bogus-key":1}')
    assert r.returncode == 69 and r.stderr.startswith("Error:\n")

    r = mgmt.ctl("clear_policy", "-p", v, "p2")
    assert (r.returncode, r.stdout) == (0, f'Clearing policy "p2" on vhost "{v}" ...\n')
    r = mgmt.ctl("clear_policy", "-p", v, "p2")
    assert (r.returncode, r.stderr) == (69, "Error:\nParameter does not exist\n")
    mgmt.ctl("clear_policy", "-p", v, "p1")
    r = mgmt.ctl("list_policies", "-p", v)
    assert r.stdout == f'Listing policies for vhost "{v}" ...\n\n'
    assert mgmt.ctl("list_policies", "-p", v, "--formatter", "json").stdout == "[]\n"


def test_vhost_limits(mgmt):
    v = mgmt.vhost()
    r = mgmt.ctl("set_vhost_limits", "-p", v, '{"max-connections":10,"max-queues":5}')
    assert (r.returncode, r.stdout) == (
        0, f'Setting vhost limits to "{{"max-connections":10,"max-queues":5}}" for vhost "{v}" ...\n')
    r = mgmt.ctl("list_vhost_limits", "-p", v)
    assert lines(r.stdout) == [f'Listing limits for vhost "{v}" ...', '{"max-connections":10,"max-queues":5}']
    r = mgmt.ctl("list_vhost_limits", "--global")
    assert f'{v}\t{{"max-connections":10,"max-queues":5}}' in lines(r.stdout)
    r = mgmt.ctl("clear_vhost_limits", "-p", v)
    assert (r.returncode, r.stdout) == (0, f'Clearing vhost "{v}" limits ...\n')
    r = mgmt.ctl("clear_vhost_limits", "-p", v)
    assert (r.returncode, r.stderr) == (69, "Error:\nParameter does not exist\n")
    r = mgmt.ctl("list_vhost_limits", "-p", v)
    assert r.stdout == f'Listing limits for vhost "{v}" ...\n\n'


def test_user_limits(mgmt):
    u = mgmt.user()
    mgmt.ctl("add_user", "-q", u, "pw")
    r = mgmt.ctl("set_user_limits", u, '{"max-connections":3,"max-channels":4}')
    assert (r.returncode, r.stdout) == (
        0, f'Setting user limits to "{{"max-connections":3,"max-channels":4}}" for user "{u}" ...\n')
    r = mgmt.ctl("list_user_limits", "--user", u)
    assert lines(r.stdout) == [f'Listing limits for user "{u}" ...', '{"max-channels":4,"max-connections":3}']
    r = mgmt.ctl("clear_user_limits", u, "max-connections")
    assert (r.returncode, r.stdout) == (0, f'Clearing "max-connections" limit for user "{u}" ...\n')
    assert lines(mgmt.ctl("list_user_limits", "-q", "--user", u).stdout) == ['{"max-channels":4}']
    r = mgmt.ctl("clear_user_limits", u, "all")
    assert (r.returncode, r.stdout) == (0, f'Clearing all limits for user "{u}" ...\n')
    assert lines(mgmt.ctl("list_user_limits", "-q", "--user", u).stdout) == ["{}"]
    nou = unique("nosuch")
    r = mgmt.ctl("set_user_limits", nou, '{"max-connections":3}')
    assert (r.returncode, r.stderr) == (69, f'Error:\n{{:no_such_user, "{nou}"}}\n')


# --------------------------------------------------------------------------- connections

def test_connections_channels_consumers(mgmt):
    v = mgmt.vhost()
    conn = pika.BlockingConnection(pika.URLParameters(mgmt.amqp(v)))
    try:
        ch = conn.channel()
        ch.queue_declare("cq")
        ch.basic_qos(prefetch_count=7)
        ch.basic_consume("cq", lambda *a: None, consumer_tag="ctag-1")
        conn.process_data_events(0.2)

        r = poll_ctl(mgmt, ["list_connections", "-s", "name", "user", "vhost", "state"],
                     lambda r: any(l.endswith(f"\t{v}\trunning") for l in lines(r.stdout)))
        mine = [l.split("\t") for l in lines(r.stdout) if f"\t{v}\t" in l]
        assert len(mine) == 1, r.stdout
        name, user, _, _ = mine[0]
        assert user == "guest"
        r = mgmt.ctl("list_connections")
        assert lines(r.stdout)[:2] == ["Listing connections ...", "user\tpeer_host\tpeer_port\tstate"]

        r = poll_ctl(mgmt, ["list_channels", "-s", "connection", "vhost", "number", "prefetch_count",
                            "consumer_count"],
                     lambda r: f"{name}\t{v}\t1\t7\t1" in lines(r.stdout))
        assert f"{name}\t{v}\t1\t7\t1" in lines(r.stdout)
        r = mgmt.ctl("list_channels")
        assert lines(r.stdout)[:2] == ["Listing channels ...",
                                       "pid\tuser\tconsumer_count\tmessages_unacknowledged"]

        r = poll_ctl(mgmt, ["list_consumers", "-p", v], lambda r: "ctag-1" in r.stdout)
        out = lines(r.stdout)
        assert out[:2] == [f"Listing consumers in vhost {v} ...",
                           "queue_name\tchannel_pid\tconsumer_tag\tack_required\tprefetch_count\tactive\targuments"]
        fields = out[2].split("\t")
        assert fields[0] == "cq" and fields[2:] == ["ctag-1", "true", "7", "true", "[]"]

        r = mgmt.ctl("close_all_connections", "-p", v, "bye now")
        assert r.returncode == 0, r.stderr
        assert lines(r.stdout) == [f"Closing all connections in vhost {v}, reason: bye now...",
                                   "Closed 1 connections"]
        with pytest.raises(pika.exceptions.ConnectionClosed) as exc:
            for _ in range(50):
                conn.process_data_events(0.1)
        assert "bye now" in str(exc.value)
    finally:
        if conn.is_open:
            conn.close()


def test_close_connection_by_name(mgmt):
    v = mgmt.vhost()
    conn = pika.BlockingConnection(pika.URLParameters(mgmt.amqp(v)))
    try:
        r = poll_ctl(mgmt, ["list_connections", "-s", "pid", "vhost"],
                     lambda r: any(l.endswith(f"\t{v}") for l in lines(r.stdout)))
        name = [l.split("\t")[0] for l in lines(r.stdout) if l.endswith(f"\t{v}")][0]
        r = mgmt.ctl("close_connection", name, "go away")
        assert (r.returncode, r.stdout) == (0, f"Closing connection {name}, reason: go away...\n")
        with pytest.raises(pika.exceptions.ConnectionClosed):
            for _ in range(50):
                conn.process_data_events(0.1)
    finally:
        if conn.is_open:
            conn.close()
    r = mgmt.ctl("close_all_connections", "-q", "-p", v, "none left")
    assert (r.returncode, r.stdout) == (0, "Closed 0 connections\n")


# --------------------------------------------------------------------------- definitions

def test_export_import_definitions(mgmt, tmp_path):
    v = mgmt.vhost()
    mgmt.api("PUT", f"/api/queues/{q(v)}/dq", {"durable": True, "auto_delete": False, "arguments": {}})
    path = tmp_path / "defs.json"
    r = mgmt.ctl("export_definitions", str(path))
    assert (r.returncode, r.stdout) == (0, f'Exporting definitions in JSON to a file at "{path}" ...\n')
    defs = json.loads(path.read_text())
    assert {"name": v} in [{"name": x["name"]} for x in defs["vhosts"]]
    assert any(x["name"] == "dq" and x["vhost"] == v for x in defs["queues"])

    r = mgmt.ctl("export_definitions", "-")
    assert r.returncode == 0 and not r.stdout.startswith("Exporting")
    assert any(x["name"] == v for x in json.loads(r.stdout)["vhosts"])

    v2 = unique("ctl-vh")
    mgmt.cleanups.append(("DELETE", f"/api/vhosts/{v2}"))
    small = tmp_path / "small.json"
    small.write_text(json.dumps({
        "vhosts": [{"name": v2}],
        "queues": [{"name": "iq", "vhost": v2, "durable": True, "auto_delete": False, "arguments": {}}],
    }))
    r = mgmt.ctl("import_definitions", str(small))
    assert r.returncode == 0, r.stderr
    assert lines(r.stdout) == [f'Importing definitions in JSON from a file at "{small}" ...',
                               "Successfully started definition import. This process is asynchronous "
                               "and can take some time."]
    deadline = time.monotonic() + 10
    while mgmt.api("GET", f"/api/queues/{q(v2)}/iq")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mgmt.api("GET", f"/api/queues/{q(v2)}/iq")[0] == 200

    r = mgmt.ctl("import_definitions", "-q", "-", input=json.dumps({"vhosts": [{"name": v2}]}))
    assert (r.returncode, r.stdout) == (0, "")

    r = mgmt.ctl("import_definitions", str(tmp_path / "missing.json"))
    assert r.returncode == 65
    assert r.stderr.startswith(f"Error (argument validation): Bad argument: File "
                               f"{tmp_path / 'missing.json'} does not exist\n")


# --------------------------------------------------------------------------- node commands

def test_status_ping_await_startup_version(mgmt):
    st, ov = mgmt.api("GET", "/api/overview")
    node = ov["node"]
    r = mgmt.ctl("status")
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    assert out[0] == f"Status of node {node} ..."
    assert f"Node name: {node}" in out
    assert f"RabbitMQ version: {ov['rabbitmq_version']}" in out
    for heading in ("Runtime", "Plugins", "Alarms", "Memory", "Totals", "Listeners"):
        assert heading in out
    assert any(l.startswith("Queue count: ") for l in out)
    assert "Status of node" not in mgmt.ctl("status", "-q").stdout
    j = json.loads(mgmt.ctl("status", "--formatter", "json").stdout)
    assert j["node_name"] == node and j["rabbitmq_version"] == ov["rabbitmq_version"]

    r = mgmt.ctl("ping")
    assert (r.returncode, lines(r.stdout)) == (0, [
        f"Will ping {node}. This only checks if the OS process is running and registered with epmd. "
        "Timeout: 60000 ms.", "Ping succeeded"])
    assert mgmt.ctl("ping", "-q").stdout == "Ping succeeded\n"

    r = mgmt.ctl("await_startup", "-t", "10")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = run_ctl(None, "version")
    assert r.returncode == 0 and r.stdout.strip()


def test_node_control_needs_usagi(mgmt):
    """stop/stop_app/start_app use Usagi's POST /api/usagi/* endpoints."""
    if mgmt.is_usagi:
        pytest.skip("covered by test_stop_app_start_app_stop_usagi")
    st, ov = mgmt.api("GET", "/api/overview")
    if ov.get("product_name", "RabbitMQ") != "RabbitMQ":
        pytest.skip("only meaningful against RabbitMQ (which has no /api/usagi/*)")
    for cmd in ("stop_app", "start_app"):
        r = mgmt.ctl(cmd)
        assert r.returncode == 69
        assert "/api/usagi/" + cmd in r.stderr and "only against Usagi" in r.stderr


def test_stop_app_start_app_stop_usagi(mgmt):
    if not mgmt.is_usagi:
        pytest.skip("stop_app/start_app/stop are only run against a Usagi server of the test's own")
    node = mgmt.api("GET", "/api/overview")[1]["node"]
    r = mgmt.ctl("stop_app")
    assert (r.returncode, r.stdout) == (0, f"Stopping rabbit application on node {node} ...\n"), r.stderr
    # stop_app is asynchronous: new AMQP connections are refused soon after
    refused = False
    deadline = time.monotonic() + 10
    while not refused and time.monotonic() < deadline:
        try:
            pika.BlockingConnection(pika.URLParameters(mgmt.amqp("/"))).close()
            time.sleep(0.2)
        except pika.exceptions.AMQPConnectionError:
            refused = True
    assert refused, "AMQP connections still accepted after stop_app"
    r = mgmt.ctl("await_startup", "-t", "2")
    assert r.returncode == 69
    r = mgmt.ctl("start_app")
    assert (r.returncode, r.stdout) == (0, f"Starting node {node} ...\n"), r.stderr
    assert mgmt.ctl("await_startup", "-t", "20").returncode == 0
    pika.BlockingConnection(pika.URLParameters(mgmt.amqp("/"))).close()
    r = mgmt.ctl("stop")
    assert (r.returncode, r.stdout) == (0, f"Stopping and halting node {node} ...\n"), r.stderr
    mgmt.server.proc.wait(20)
    r = mgmt.ctl("list_users")
    assert r.returncode == 69


# --------------------------------------------------------------------------- client-side errors
# (no broker needed)

def test_no_command_prints_usage():
    r = run_ctl(None)
    assert r.returncode == 64 and r.stdout == ""
    assert "Usage" in r.stderr and "Available commands:" in r.stderr and "list_queues" in r.stderr


def test_unknown_command():
    r = run_ctl(None, "no_such_command")
    assert r.returncode == 64 and r.stdout == ""
    assert r.stderr.startswith("\nCommand 'no_such_command' not found. \n")
    assert "Available commands:" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["add_user"], "not enough arguments."),
    (["add_user", "a", "b", "c"], "too many arguments."),
    (["set_permissions", "u", "a", "b"], "not enough arguments."),
    (["list_users", "extra"], "too many arguments."),
    (["list_queues", "bogus"], "Info key(s) bogus are not supported"),
    (["list_queues", "--bogus"], "Invalid options for this command:\n--bogus : "),
    (["list_queues", "-p"], "Invalid options for this command:\n-p : "),
    (["list_users", "-e"], "Invalid options for this command:\n-e : "),
])
def test_argument_validation(args, message):
    r = run_ctl("http://guest:guest@127.0.0.1:1", *args)
    assert r.returncode == 64, r.stderr
    assert r.stdout == ""
    assert r.stderr.startswith(f"Error (argument validation): {message}\nArguments given:\n\t"
                               f"{' '.join(args)}\n\nUsage\n\nusagictl [--node <node>] "
                               f"[--longnames] [--quiet] {args[0]}")


def test_unreachable_broker():
    r = run_ctl("http://guest:guest@127.0.0.1:1", "list_users")
    assert r.returncode == 69
    assert r.stdout == ""           # as rabbitmqctl: the node is asked whether its app runs first
    assert r.stderr.startswith("Error: unable to perform an operation on the management API at "
                               "http://127.0.0.1:1/")
    r = run_ctl(None, "-q", "list_vhosts", env={"USAGI_URL": "http://127.0.0.1:1"})
    assert r.returncode == 69 and "http://127.0.0.1:1/" in r.stderr


def test_default_url_and_url_option(mgmt):
    r = run_ctl(None, "list_vhosts", env={"USAGI_URL": "", "HOME": "/nonexistent"})
    # without USAGI_URL the default is http://guest:guest@localhost:15672
    assert "localhost:15672" in r.stderr or r.returncode == 0
    r = run_ctl("http://guest:guest@127.0.0.1:1", "--url", mgmt.url, "-q", "list_vhosts")
    assert r.returncode == 0 and "/" in lines(r.stdout)


def test_bad_credentials(mgmt):
    p = urllib.parse.urlsplit(mgmt.url)
    bad = f"{p.scheme}://guest:wrong-password@{p.hostname}:{p.port}"
    r = run_ctl(bad, "list_users")
    assert r.returncode == 69
    assert "refused user 'guest'" in r.stderr


def test_help():
    r = run_ctl(None, "help")
    assert r.returncode == 0 and "Available commands:" in r.stdout
    r = run_ctl(None, "help", "set_policy")
    assert r.returncode == 0
    assert ("usagictl [--node <node>] [--longnames] [--quiet] set_policy [--vhost <vhost>] "
            "[--priority <priority>] [--apply-to <apply-to>] <name> <pattern> <definition>") in r.stdout
    r = run_ctl(None, "help", "nope")
    assert (r.returncode, r.stderr) == (64, "Error:\n\nCommand 'nope' not found.\n")
    r = run_ctl(None, "list_queues", "--help")
    assert r.returncode == 0 and "must be one of" in r.stdout


def test_console_script_entry_point():
    from usagi.cli import ctl
    assert callable(ctl.main)
    assert ctl.main(["version"]) == 0


# --------------------------------------------------------------------------- against rabbitmqctl

@pytest.mark.skipif(not (RABBITMQCTL and os.environ.get("USAGI_TEST_MGMT_URL")),
                    reason="set USAGI_TEST_RABBITMQCTL (see ctlutil.py) to compare with rabbitmqctl on the node "
                    "behind USAGI_TEST_MGMT_URL")
@pytest.mark.parametrize("args", [
    "list_users", "list_users -q", "list_users --formatter json", "list_vhosts name tracing",
    "list_exchanges name type durable auto_delete internal arguments", "list_bindings",
    "list_permissions", "list_policies", "list_policies --formatter json", "list_vhost_limits",
    "list_queues -p {v}", "list_queues -p {v} --formatter json", "list_user_permissions guest",
    "list_queues name durable auto_delete arguments exclusive", "add_user", "list_queues bogus",
    "list_queues --bogus", "delete_user {v}", "list_permissions -p {v}", "delete_vhost {v}",
    "clear_policy {v}",
])
def test_same_as_rabbitmqctl(mgmt, args):
    v = unique("ctl-none")
    argv = shlex.split(args.format(v=v))
    mine = mgmt.ctl(*argv)
    theirs = run_rabbitmqctl(*argv)
    assert mine.returncode == theirs.returncode
    # rows come in the broker's internal order from rabbitmqctl, sorted from the API
    if argv[-1:] == ["json"] or "--formatter" in argv:
        assert sorted(json.loads(mine.stdout or "[]"), key=json.dumps) == \
            sorted(json.loads(theirs.stdout or "[]"), key=json.dumps)
    else:
        assert sorted(lines(mine.stdout)) == sorted(lines(theirs.stdout))
    assert mine.stderr == theirs.stderr


def test_list_queues_of_a_long_vhost_is_written_as_it_arrives(fresh_server):
    """usagictl list_queues decodes the listing a queue at a time: with 30,000 queues (some 55 MB
    of JSON) it runs in an address space of 160 MB, where parsing the reply whole needed several
    times that. Every queue is listed once, with its pid."""
    import resource
    import sys

    from ctlutil import ROOT, _wait_for_mgmt

    server = fresh_server(extra_args=["--in-memory"])
    host, port = _wait_for_mgmt(server)
    url = f"http://guest:guest@{host}:{port}"
    n = 30_000
    defs = {"queues": [{"vhost": "/", "name": f"long-{i:05d}", "durable": False, "auto_delete": False,
                        "arguments": {"x-queue-mode": "lazy"} if i % 2 else {}} for i in range(n)]}
    req = urllib.request.Request(f"http://{host}:{port}/api/definitions", data=json.dumps(defs).encode(),
                                 method="POST", headers={"Content-Type": "application/json",
                                                         "Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status in (201, 204)

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (160 << 20, 160 << 20))
    env = dict(os.environ, USAGI_URL=url, PYTHONPATH=ROOT, NO_COLOR="1")
    r = subprocess.run([sys.executable, "-m", "usagi.cli.ctl", "list_queues", "name", "pid", "--no-table-headers",
                        "-q"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, preexec_fn=cap)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert sorted(name for name, _pid in rows) == [f"long-{i:05d}" for i in range(n)]
    assert all(pid.startswith("<") for _name, pid in rows)
