"""The dashboard shows names and messages it does not control: queues, exchanges, virtual hosts,
users, policies, connection names, message payloads and headers are chosen by whoever declares or
publishes them, any of whom may be hostile. Markup in them (<script>, an <img> whose onerror runs
script, quotes that would close an attribute), right-to-left overrides and names of 255 bytes
without a space are shown as text on every page that names them: nothing runs, the page raises no
script error, and nothing makes the page wider than the window.
"""
from __future__ import annotations

import time
import urllib.parse

import pytest
from dashutil import AVAILABLE, WHY, click, finds, go, js_errors, login, page_shot, wait

if not AVAILABLE:
    pytest.skip(WHY, allow_module_level=True)
pika = pytest.importorskip("pika")

pytestmark = pytest.mark.timeout(300)

MARK = "window.__pwned=(window.__pwned||0)+1"
EVIL = f"<img src=x onerror=\"{MARK}\"><script>{MARK}</script>'\"\u202e"
LONG = "L" * 255


def q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def test_hostile_names_and_messages_are_shown_as_text(dash, browser, shots):
    d = browser
    vh = f"vh{EVIL}"
    user = f"u{EVIL}"
    for path, body in ((f"/vhosts/{q(vh)}", {}), (f"/permissions/{q(vh)}/guest", {"configure": ".*", "write": ".*", "read": ".*"}),
                       (f"/users/{q(user)}", {"password": "pw", "tags": "management"}),
                       (f"/permissions/%2F/{q(user)}", {"configure": ".*", "write": ".*", "read": ".*"}),
                       (f"/queues/%2F/{q('q' + EVIL)}", {"arguments": {EVIL: EVIL}}),
                       (f"/queues/%2F/{q(LONG)}", {}), (f"/queues/{q(vh)}/{q('q' + EVIL)}", {}),
                       (f"/exchanges/%2F/{q('x' + EVIL)}", {"type": "topic", "arguments": {EVIL: EVIL}}),
                       (f"/exchanges/%2F/{q(LONG)}", {"type": "fanout"}),
                       (f"/policies/%2F/{q('p' + EVIL)}", {"pattern": EVIL, "definition": {"max-length": 9}}),
                       (f"/vhost-limits/{q(vh)}/max-queues", {"value": 10})):
        status, got = dash.api("PUT", path, body)
        assert status in (201, 204), (path, status, got)
    for src, dst in ((f"x{EVIL}", f"q{EVIL}"), (LONG, LONG), (f"x{EVIL}", LONG)):
        status, got = dash.api("POST", f"/bindings/%2F/e/{q(src)}/q/{q(dst)}", {"routing_key": EVIL, "arguments": {EVIL: EVIL}})
        assert status == 201, (status, got)
    conn = dash.pika(name=f"c{EVIL}{LONG}")
    ch = conn.channel()
    for name in (f"q{EVIL}", LONG):
        ch.basic_publish("", name, EVIL.encode(), pika.BasicProperties(headers={EVIL: EVIL, LONG: LONG}, message_id=EVIL,
                                                                       correlation_id=LONG))
    ch.queue_declare(f"c{EVIL}")
    ch.basic_consume(f"c{EVIL}", lambda *a: None, consumer_tag=f"t{EVIL}")
    ch.basic_publish("", LONG, LONG.encode() * 4)
    login(d, dash.base, "guest", "guest")
    cname = next(c["name"] for c in dash.api("GET", "/connections")[1])
    chname = next(c["name"] for c in dash.api("GET", "/channels")[1])
    pages = ["", "connections", f"connections/{q(cname)}", "channels", f"channels/{q(chname)}", "exchanges",
             f"exchanges/%2F/{q('x' + EVIL)}", f"exchanges/%2F/{q(LONG)}", "queues", f"queues/%2F/{q('q' + EVIL)}",
             f"queues/%2F/{q(LONG)}", f"queues/{q(vh)}/{q('q' + EVIL)}", "admin/users", f"admin/users/{q(user)}",
             "admin/vhosts", f"admin/vhosts/{q(vh)}", "admin/policies", "admin/limits", "admin/definitions"]
    wrong = {}
    for page in pages:
        go(d, dash.base, page)
        wait(d, lambda d: finds(d, "#main table, #main .panel"), what=f"#/{page}")
        time.sleep(0.6)                         # the page's data came, its tables drawn
        if page.startswith("queues/%2F/"):
            for button in ("#peek-button",):
                click(d, button)
                wait(d, lambda d: finds(d, "#peek-results .message"), what="the peek")
        if page == f"queues/%2F/{q('q' + EVIL)}":
            page_shot(d, shots, "hostile-01-queue-page")
        elif page == f"exchanges/%2F/{q(LONG)}":
            page_shot(d, shots, "hostile-02-long-exchange-name")
        pwned = d.execute_script("return window.__pwned || 0")
        wide = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        errors = js_errors(d)
        if pwned or wide > 0 or errors:
            wrong[page] = {"script ran": pwned, "wider by px": wide, "errors": errors}
    conn.close()
    assert not wrong, wrong
