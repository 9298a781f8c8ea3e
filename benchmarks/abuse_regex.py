#!/usr/bin/env python3
"""What a backtracking pattern costs everyone else: a bystander's publish-to-delivery latency while
users with the rights to write patterns use them against the broker, Usagi and RabbitMQ side by side.

    python benchmarks/abuse_regex.py                       # every attack, Usagi then RabbitMQ
    python benchmarks/abuse_regex.py --attacks listing,policy --no-rabbitmq
    python benchmarks/abuse_regex.py --attacks apply --apply-queues 100000 --no-rabbitmq

Attacks (each on a vhost of its own, created and deleted here):
  listing     a `management` user lists exchanges with `use_regex` and backtracking patterns
  listing-plain  the same listings with an ordinary pattern (no attack: what listing costs)
  policy      a `policymaker` sets policies with such patterns over existing queues, then
              declares queues and publishes to them (with confirms)
  permission  an administrator gives a user such configure/write patterns; the user is refused
  topic       the same with topic-permission patterns on amq.topic
  apply       a policy set over a vhost with many queues (--apply-queues); Usagi only by default,
              since RabbitMQ runs one process per queue
  idle        no attack, the same queues as `apply`: what holding them costs by itself

For each: the bystander's p50/p99/max latency (ms) and deliveries while the attack ran, lost
messages or a closed connection, how long the attack ran (rounds repeat for --duration seconds,
at least one round, at most --limit) and the distinct replies it got (HTTP status, AMQP reply
code, or the error). Usagi is started fresh for every attack; RabbitMQ must be running
(--rabbitmq-amqp, --rabbitmq-mgmt).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from rawamqp import RawConnection, close_summary, frame_bytes, method_payload  # noqa: E402
from support.bystander import Bystander  # noqa: E402
from support.harness import ServerProcess, wait_for  # noqa: E402

RUN = "a" * 200
PATHOLOGICAL = [
    r"^x\.(a|aa)+$",
    r"^x\.(a+)+$",
    r"^x\.(a*)*$",
    r"^x\.(.*a){20}$",
    ".*" * 20 + "\\x00",
    r"^x\.((a+)+)+\d{6}$",
]
VHOST = f"abuse-regex-{os.getpid()}"


class Target:
    def __init__(self, name, host, port, mgmt_url, user="guest", password="guest"):
        self.name, self.host, self.port, self.mgmt_url = name, host, port, mgmt_url
        self.user, self.password = user, password

    def api(self, method, path, body=None, user=None, password=None, timeout=120):
        auth = base64.b64encode(f"{user or self.user}:{password or self.password}".encode()).decode()
        req = urllib.request.Request(self.mgmt_url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Basic " + auth,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                data = r.read()
                return r.status, (json.loads(data) if data else None)
        except urllib.error.HTTPError as e:
            data = e.read()
            return e.code, (json.loads(data) if data else None)

    def amqp(self, user=None, password=None) -> RawConnection:
        return RawConnection.opened(self.host, self.port, vhost=VHOST, user=user or self.user,
                                    password=password or self.password)


V = urllib.parse.quote(VHOST, safe="")


def setup_vhost(t: Target):
    t.api("PUT", f"/api/vhosts/{V}", {})
    t.api("PUT", f"/api/permissions/{V}/{t.user}", {"configure": ".*", "write": ".*", "read": ".*"})


def add_user(t: Target, name, tags, configure=".*", write=".*", read=".*"):
    t.api("PUT", f"/api/users/{name}", {"password": "pw", "tags": tags})
    t.api("PUT", f"/api/permissions/{V}/{name}", {"configure": configure, "write": write, "read": read})


def declare_many(t: Target, method, names, batch=2000, **args):
    c = t.amqp()
    c.open_channel(1)
    key = "exchange" if method == "exchange.declare" else "queue"
    for i in range(0, len(names), batch):
        part = names[i:i + batch]
        c.send_raw(b"".join(frame_bytes(1, 1, method_payload(method, **{key: n}, **args)) for n in part))
        for _ in part:
            c.expect_method(method + "-ok", timeout=300)
    c.close_connection()


# ------------------------------------------------------------------ attacks: setup(t) then run(t)

def listing(t: Target, a):
    declare_many(t, "exchange.declare", [f"x.{RUN}.{i:05d}" for i in range(a.names)], type="direct")
    add_user(t, f"watcher-{os.getpid()}", "management")

    def run(_round):
        out = []
        for pat in PATHOLOGICAL:
            q = urllib.parse.urlencode({"page": 1, "page_size": 100, "use_regex": "true", "name": pat})
            out.append(t.api("GET", f"/api/exchanges/{V}?{q}", user=f"watcher-{os.getpid()}", password="pw")[0])
        return out
    return run


def listing_plain(t: Target, a):
    """No attack: the same listings with an ordinary pattern, to tell what listing costs by itself."""
    declare_many(t, "exchange.declare", [f"x.{RUN}.{i:05d}" for i in range(a.names)], type="direct")
    add_user(t, f"watcher-{os.getpid()}", "management")

    def run(_round):
        q = urllib.parse.urlencode({"page": 1, "page_size": 100, "use_regex": "true", "name": r"^x\.a+\.0001"})
        return [t.api("GET", f"/api/exchanges/{V}?{q}", user=f"watcher-{os.getpid()}", password="pw")[0]
                for _ in PATHOLOGICAL]
    return run


def policy(t: Target, a):
    declare_many(t, "queue.declare", [f"x.{RUN}.{i:05d}" for i in range(a.names)])
    pm = f"pm-{os.getpid()}"
    add_user(t, pm, "policymaker")

    def run(n):
        out = []
        for i, pat in enumerate(PATHOLOGICAL):
            out.append(t.api("PUT", f"/api/policies/{V}/slow-{i}",
                             {"pattern": pat, "definition": {"max-length": 1 + n % 2}, "priority": 10 + i,
                              "apply-to": "queues"}, user=pm, password="pw")[0])
        c = t.amqp(pm, "pw")
        c.open_channel(1)
        c.call(1, "confirm.select", "confirm.select-ok")
        for i in range(a.declares):
            q = f"x.{RUN}.{n:02d}{i:03d}"
            c.send_method(1, "queue.declare", queue=q)
            c.expect_method("queue.declare-ok", timeout=300)
            c.publish(1, "", q, b"m")
            c.expect_method("basic.ack", timeout=300)
        c.close_connection()
        return out
    return run


def permission(t: Target, a):
    u = f"u-{os.getpid()}"
    add_user(t, u, "", configure=r"^(a|aa)+$", write=r"^(a+)+$", read=".*")

    def run(_round):
        c = t.amqp(u, "pw")
        out = []
        for i in range(20):
            ch = i + 1
            c.open_channel(ch)
            if i % 2:
                c.send_method(ch, "queue.declare", queue="a" * 250 + f"!{i}")
            else:
                c.send_method(ch, "basic.publish", exchange="a" * 250 + f"!{i}", routing_key="k")
                c.send_content(ch, b"m")
            out.append(close_summary(c.expect_channel_close(ch, timeout=300))[0])
        c.close_connection()
        return out
    return run


def topic(t: Target, a):
    u = f"t-{os.getpid()}"
    add_user(t, u, "")
    t.api("PUT", f"/api/topic-permissions/{V}/{u}",
          {"exchange": "amq.topic", "write": r"^(a|aa)+$", "read": r"^(a+)+$"})

    def run(_round):
        c = t.amqp(u, "pw")
        c.open_channel(1)
        q = c.call(1, "queue.declare", "queue.declare-ok", queue="", exclusive=True).args["queue"]
        out = []
        for i in range(20):
            ch = i + 2
            c.open_channel(ch)
            if i % 2:
                c.send_method(ch, "queue.bind", queue=q, exchange="amq.topic", routing_key="a" * 250 + "!")
            else:
                c.publish(ch, "amq.topic", "a" * 250 + "!", b"m")
            out.append(close_summary(c.expect_channel_close(ch, timeout=300))[0])
        c.close_connection()
        return out
    return run


def apply(t: Target, a):
    declare_many(t, "queue.declare", [f"q-{i}" for i in range(a.apply_queues)])

    def run(n):
        return [t.api("PUT", f"/api/policies/{V}/limit", {"pattern": "^q-" if n % 2 else "^q-1",
                                                           "definition": {"max-length": 1000 + n},
                                                           "apply-to": "queues"})[0]]
    return run


def idle(t: Target, a):
    """No attack: the same queues as `apply`, to tell what they cost by themselves (stats, expiry)."""
    declare_many(t, "queue.declare", [f"q-{i}" for i in range(a.apply_queues)])

    def run(_round):
        time.sleep(0.5)
        return []
    return run


ATTACKS = {"listing": listing, "listing-plain": listing_plain, "policy": policy, "permission": permission, "topic": topic, "apply": apply,
           "idle": idle}
RABBITMQ_DEFAULT = ("listing", "listing-plain", "policy", "permission", "topic")


def measure(t: Target, attack: str, a) -> dict:
    setup_vhost(t)
    try:
        run = ATTACKS[attack](t, a)
        replies = []

        def attack_loop():
            # rounds of the attack until --duration has passed (at least one)
            n = 0
            end = time.monotonic() + a.duration
            while True:
                try:
                    replies.extend(run(n))
                except Exception as e:  # noqa: BLE001 - a broker that gave up on us is a result
                    replies.append(type(e).__name__)
                    return
                n += 1
                if time.monotonic() >= end:
                    return
        with Bystander(t.host, t.port, vhost=VHOST) as b:
            time.sleep(0.5)
            b.reset()
            t0 = time.monotonic()
            th = threading.Thread(target=attack_loop, daemon=True)
            th.start()
            th.join(a.limit)
            took = time.monotonic() - t0
            time.sleep(0.5)
            s = b.stats()
        s.update(attack=attack, broker=t.name, seconds=round(took, 2),
                 finished=not th.is_alive(), replies=sorted(set(map(str, replies))))
        return s
    finally:
        # a broker still busy with the attack gets a while to answer (RabbitMQ finishes its matches
        # in the end; a frozen Usagi is killed after this)
        try:
            t.api("DELETE", f"/api/vhosts/{V}", timeout=a.limit)
            for u in ("watcher", "pm", "u", "t"):
                t.api("DELETE", f"/api/users/{u}-{os.getpid()}", timeout=a.limit)
        except OSError:
            pass


def usagi_target(a):
    srv = ServerProcess().start()
    m = wait_for(lambda: __import__("re").search(r"Management listener on (\S+):(\d+)", "".join(srv.lines)))
    return srv, Target("usagi", srv.host, srv.port, f"http://127.0.0.1:{m.group(2)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attacks", default="listing,listing-plain,policy,permission,topic,apply,idle")
    ap.add_argument("--names", type=int, default=3000, help="exchanges or queues the patterns meet")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of attack rounds")
    ap.add_argument("--declares", type=int, default=200)
    ap.add_argument("--apply-queues", type=int, default=100000)
    ap.add_argument("--limit", type=float, default=120.0, help="seconds an attack may run")
    ap.add_argument("--no-rabbitmq", action="store_true")
    ap.add_argument("--no-usagi", action="store_true")
    ap.add_argument("--rabbitmq-amqp", default="127.0.0.1:5682")
    ap.add_argument("--rabbitmq-mgmt", default="http://127.0.0.1:15682")
    ap.add_argument("--rabbitmq-attacks", default=",".join(RABBITMQ_DEFAULT))
    ap.add_argument("--rabbitmq-names", type=int, default=50,
                    help="names for RabbitMQ (3.10 spends up to ~0.1 s on each match: keep it small)")
    ap.add_argument("--rabbitmq-declares", type=int, default=10)
    a = ap.parse_args()
    rows = []
    for attack in a.attacks.split(","):
        if not a.no_usagi:
            srv, t = usagi_target(a)
            try:
                rows.append(measure(t, attack, a))
            finally:
                srv.kill() if not rows[-1:] or not rows[-1]["finished"] else srv.stop()
                srv.cleanup()
            print(json.dumps(rows[-1]), flush=True)
        if not a.no_rabbitmq and attack in a.rabbitmq_attacks.split(","):
            host, port = a.rabbitmq_amqp.rsplit(":", 1)
            ra = argparse.Namespace(**{**vars(a), "names": a.rabbitmq_names, "declares": a.rabbitmq_declares})
            rows.append(measure(Target("rabbitmq", host, int(port), a.rabbitmq_mgmt), attack, ra))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print("| attack | broker | p50 ms | p99 ms | max ms | deliveries | lost | closed | attack s | replies |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['attack']} | {r['broker']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['count']} | "
              f"{r['lost']} | {r['closed']} | {r['seconds']}{'' if r['finished'] else ' (unfinished)'} | "
              f"{' '.join(r['replies'])} |")


if __name__ == "__main__":
    main()
