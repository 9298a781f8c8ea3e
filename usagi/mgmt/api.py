"""The `/api/...` routes: RabbitMQ's paths, methods, access rules, status codes and JSON shapes.

Routing is done here on the raw path, one segment at a time, so that names holding an encoded
slash (the default vhost is `%2F`) decode to exactly one segment. The order of checks follows
RabbitMQ's (cowboy_rest): unknown path 404, method not allowed 405, authentication 401,
authorisation 401 "not_authorised", then the content type of a body (415 where RabbitMQ takes only
JSON), its size (RabbitMQ's max_body_size, checked from Content-Length before a byte is read and
while reading a chunked body: 413), then the resource (404) and the operation itself.

Nothing here holds the event loop for long, whatever the size of what users made (mgmt.slices): a
body is parsed a slice at a time and refused past amqp.table.MAX_DEPTH levels of nesting; listings
are gathered, filtered, sorted, paginated, rendered and encoded one object per step, and a large
answer is streamed in chunks; a definitions import is checked and then applied one element per
step, one import at a time, and answered after the commit that holds it.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import logging
import math
import urllib.parse

from aiohttp import web

from ..amqp import errors as E
from ..amqp.errors import AMQPError, ChannelError
from ..core import access
from ..core.broker import CommitFailed
from ..model import patterns
from ..model.queue import Queue
from . import checks, nodectl, ops, slices, stats
from .formats import View, queue_sums
from .util import (ApiError, bad_request, dumps, get_path, is_loopback, jsonable, not_authorised, not_found,
                   parse_bool, properties_key)

log = logging.getLogger("usagi.mgmt")

REALM = 'Basic realm="RabbitMQ Management"'
JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-cache",
                "Vary": "accept, accept-encoding, origin"}
MGMT_TAGS = ("administrator", "monitoring", "policymaker", "management")


# ---------------------------------------------------------------------------------------- responses

class Reply:
    """A response other than 200 with a JSON body: a status, an optional body and headers."""

    def __init__(self, status: int = 204, body=None, headers: dict | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


def created(was_created: bool) -> Reply:
    return Reply(201 if was_created else 204)


class Listing:
    """A list reply: filtered, sorted, paginated and cut to `columns` as the query asks, a slice
    at a time (list_reply).

    `items` are the listed objects: a list, or an iterable that walks the broker's structures
    (over copies of their dicts, as it is walked across loop turns). `render` makes an object's
    JSON (None: the items are JSON already), and is called once per object shown, one per step;
    `fields` are cheap ways to a sort key (a key not in it is read from the rendered JSON), and
    `name` the name the `name` filter matches (None: the rendered JSON's "name"). `prepare` is
    awaited with the pacer before the first object is rendered (View.prepare)."""

    def __init__(self, items, default_sort=("vhost", "name"), render=None, fields=None, name=None,
                 prepare=None):
        self.items = items
        self.default_sort = default_sort
        self.render = render
        self.fields = fields or {}
        self.name = name
        self.prepare = prepare


def json_response(status: int, body, headers: dict | None = None) -> web.Response:
    h = dict(JSON_HEADERS)
    if headers:
        h.update(headers)
    return web.Response(status=status, body=dumps(body), headers=h)


class Body:
    """A 200 answer built a piece at a time: one response when it stays under STREAM_AT bytes, else
    streamed in chunks of about that size as they are made (so a listing of 100,000 queues, some
    200 MB of JSON, is never held whole). A HEAD answer is never streamed."""
    STREAM_AT = 1 << 20

    def __init__(self, request: web.Request, headers: dict | None = None, base: dict = JSON_HEADERS):
        self.request = request
        self.headers = dict(base)
        if headers:
            self.headers.update(headers)
        self.parts: list = []
        self.size = 0
        self.resp = None

    async def write(self, data: bytes):
        self.parts.append(data)
        self.size += len(data)
        if self.size >= self.STREAM_AT and self.request.method != "HEAD":
            if self.resp is None:
                self.resp = web.StreamResponse(status=200, headers=self.headers)
                await self.resp.prepare(self.request)
            data = b"".join(self.parts)
            self.parts, self.size = [], 0
            await self.resp.write(data)

    async def finish(self) -> web.StreamResponse:
        data = b"".join(self.parts)
        if self.resp is None:
            return web.Response(status=200, body=data, headers=self.headers)
        if data:
            await self.resp.write(data)
        await self.resp.write_eof()
        return self.resp


def error_response(e: ApiError) -> web.Response:
    h = {"Content-Type": "application/json", "Vary": "origin"}
    h.update(e.headers)
    return web.Response(status=e.status, body=dumps({"error": e.error, "reason": jsonable(e.reason)}),
                        headers=h)


def amqp_error(e: AMQPError) -> ApiError:
    """An engine error as RabbitMQ's management API reports it for the operations it runs as a
    direct method call (declare, delete, purge, bind, unbind: rabbit_mgmt_util:direct_request)."""
    if e.code in (E.ACCESS_REFUSED, E.NOT_ALLOWED):
        return not_authorised("Access refused.")
    if e.code == E.NOT_FOUND:
        return ApiError(404, "not_found", e.text)
    return bad_request(e.text)


def channel_error(e: AMQPError) -> ApiError:
    """An engine error as RabbitMQ's management API reports it for the operations it runs over an
    internal AMQP channel (POST .../get: rabbit_mgmt_util:with_channel): the channel's close text."""
    if e.code == E.ACCESS_REFUSED:
        return not_authorised(e.reply_text)
    if e.code == E.NOT_FOUND:
        return ApiError(404, "not_found", e.reply_text)
    return bad_request(f"{e.code} {e.reply_text}")


# ---------------------------------------------------------------------------------------- content types
# What a PUT or POST body may be, as RabbitMQ's resources declare it (content_types_accepted): most
# take any type, or none; a definitions upload only application/json (any parameters) or a
# multipart form; vhost and user limits and operator policies only application/json. Anything else,
# a missing or malformed Content-Type included, gets 415 with no body.

ANY_TYPE = None
JSON_TYPE = (("application", "json"),)
JSON_OR_FORM = (("application", "json"), ("multipart", "form-data"))


def content_type_accepted(accept, header: str | None) -> bool:
    if accept is ANY_TYPE:
        return True
    if not header:
        return False
    mime = header.split(";", 1)[0].strip().lower()
    type_, sep, subtype = mime.partition("/")
    if not sep or not type_ or not subtype:
        return False
    return (type_, subtype) in accept


async def no_expect(request: web.Request) -> None:
    """aiohttp's Expect handler, which would ask for the body before the request is checked:
    dispatch sends "100 Continue" itself, once the body is to be read."""


# ---------------------------------------------------------------------------------------- router

class Route:
    __slots__ = ("parts", "handlers")

    def __init__(self, pattern: str):
        self.parts = tuple(p for p in pattern.split("/") if p) if pattern else ()
        self.handlers: dict = {}     # method -> (function, access check, content types accepted)

    def match(self, segs: list):
        if len(segs) != len(self.parts):
            return None
        params = {}
        for p, s in zip(self.parts, segs):
            if p.startswith(":"):
                params[p[1:]] = s
            elif p != s:
                return None
        return params

    @property
    def allow(self) -> str:
        methods = set(self.handlers)
        if "GET" in methods:
            methods.add("HEAD")
        methods.add("OPTIONS")
        order = ("HEAD", "GET", "PUT", "POST", "DELETE", "OPTIONS")
        return ", ".join(m for m in order if m in methods)


class Router:
    def __init__(self):
        self.routes: list[Route] = []
        self._by_pattern: dict = {}

    def add(self, pattern: str, method: str, access, accept=ANY_TYPE):
        def deco(fn):
            r = self._by_pattern.get(pattern)
            if r is None:
                r = self._by_pattern[pattern] = Route(pattern)
                self.routes.append(r)
            r.handlers[method] = (fn, access, accept)
            return fn
        return deco

    def resolve(self, segs: list):
        for r in self.routes:
            params = r.match(segs)
            if params is not None:
                return r, params
        return None, None


R = Router()
get = lambda p, a: R.add(p, "GET", a)        # noqa: E731
put = lambda p, a, accept=ANY_TYPE: R.add(p, "PUT", a, accept)        # noqa: E731
post = lambda p, a, accept=ANY_TYPE: R.add(p, "POST", a, accept)      # noqa: E731
delete = lambda p, a: R.add(p, "DELETE", a)  # noqa: E731


# ---------------------------------------------------------------------------------------- request context

BODY_TIMEOUT = 60.0     # seconds a request body may go without a byte arriving (then 408)


class Req:
    def __init__(self, m, request: web.Request, params: dict, user):
        self.m = m
        self.broker = m.broker
        self.request = request
        self.params = params
        self.user = user
        self.parsed = {}            # the body as JSON ({} for none) ...
        self.body_error = None      # ... or why it is not (raised when a handler reads it)
        self.query = request.rel_url.query
        self.method = request.method
        self._view = None
        self.pacer = slices.Pacer()
        self.bulk = False           # a definitions import: a bigger body may hold more

    @property
    def view(self) -> View:
        if self._view is None:
            self._view = View(self.m)
        return self._view

    def ranged(self, ceil_lengths: bool = False, error: str = "bad_request") -> View:
        """The view, with the history ranges the query asks for (lengths_age/_incr, msg_rates_*,
        data_rates_*, node_stats_*), or 400 as RabbitMQ refuses a bad one (whose error name
        depends on the resource: `error`)."""
        try:
            ranges = stats.parse_ranges(self.query, stats.wall_ms(), ceil_lengths)
        except stats.RangeError as e:
            raise ApiError(400, error, str(e)) from None
        self._view = View(self.m, ranges)
        return self._view

    async def load_body(self):
        """Read the body (at most the node's max_body_size) and parse it, a slice at a time."""
        request = self.request
        limit = self.m.max_body_size
        n = request.content_length
        if n is not None and n > limit:
            raise body_too_large(limit, n)
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        if request.headers.get("Content-Encoding", "identity").strip().lower() not in ("identity", ""):
            # RabbitMQ reads the bytes as they come: a compressed body is not JSON. Not inflated
            # here either, so that a small body cannot become a large one.
            self.body_error = ValueError("a compressed body is not JSON")
            return
        ctype = request.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            try:
                form = await asyncio.wait_for(request.post(), BODY_TIMEOUT)
            except web.HTTPRequestEntityTooLarge:
                raise body_too_large(limit, None) from None
            except asyncio.TimeoutError:
                raise ApiError(408, "request_timeout", "the request body did not arrive in time") from None
            except ConnectionError as e:
                raise ApiError(400, "bad_request", f"the request body was cut short: {e}") from None
            except Exception as e:  # noqa: BLE001 - a broken form (boundary, charset, truncated)
                self.body_error = ValueError(f"bad multipart body: {e}")
                return
            f = form.get("file")
            if hasattr(f, "file"):
                raw = f.file.read()
            elif isinstance(f, str):
                raw = f.encode("utf-8", "surrogatepass")
            else:
                self.body_error = ValueError("no file in the form")
                return
        else:
            buf = bytearray()
            content = request.content
            while True:
                try:
                    chunk = await asyncio.wait_for(content.readany(), BODY_TIMEOUT)
                except asyncio.TimeoutError:
                    raise ApiError(408, "request_timeout", "the request body did not arrive in time") from None
                except (ConnectionError, web.HTTPException) as e:   # the client went away mid-body
                    raise ApiError(400, "bad_request", f"the request body was cut short: {e}") from None
                if not chunk:
                    break
                buf += chunk
                if len(buf) > limit:
                    raise body_too_large(limit, len(buf))
            raw = bytes(buf)
        if not raw.strip():
            return
        try:
            self.parsed = await slices.decode_json(     # NaN, Infinity and 1e999 are not JSON
                raw, self.pacer, slices.MAX_CONTAINERS_BULK if self.bulk else slices.MAX_CONTAINERS)
        except (slices.JSONTooDeep, slices.JSONTooLarge) as e:
            self.body_error = e
        except ValueError as e:          # not JSON, not UTF-8, or a lone \udXXX (no UTF-8 for it)
            self.body_error = e

    def json(self, error: str = "not_json"):
        if self.body_error is not None:
            if isinstance(self.body_error, (slices.JSONTooDeep, slices.JSONTooLarge)):
                raise bad_request(str(self.body_error))
            raise bad_request(error)
        return self.parsed

    def body(self) -> dict:
        b = self.json()
        if isinstance(b, list) and not b:
            return {}
        if not isinstance(b, dict):
            raise bad_request("not_json")
        return b

    # -- names from the path
    def p(self, key: str) -> str:
        return self.params[key]

    def xname(self, key: str = "exchange") -> str:
        n = self.params[key]
        return "" if n == "amq.default" else n

    def vhost(self, missing=None):
        """The vhost named in the path, or 404 (`missing` overrides the error)."""
        v = self.broker.vhosts.get(self.params["vhost"])
        if v is None:
            raise missing or not_found()
        return v

    # -- user capabilities
    @property
    def tags(self) -> list:
        return self.user.tags if self.user is not None else []

    @property
    def is_admin(self) -> bool:
        return "administrator" in self.tags

    @property
    def is_monitor(self) -> bool:
        return "administrator" in self.tags or "monitoring" in self.tags

    @property
    def is_policymaker(self) -> bool:
        return "administrator" in self.tags or "policymaker" in self.tags

    def login_vhosts(self) -> list:
        """The vhosts the user may open (RabbitMQ's list_login_vhosts)."""
        b = self.broker
        return [v for n, v in sorted(b.vhosts.items()) if access.vhost_access(b, self.user, n)]

    def visible_vhosts(self) -> list:
        """The vhosts the user may know of: all for monitoring users, else the login vhosts
        (RabbitMQ's list_visible_vhosts: vhosts, vhost limits, connections, channels)."""
        if self.is_monitor:
            return [v for _n, v in sorted(self.broker.vhosts.items())]
        return self.login_vhosts()

    def listed_vhosts(self) -> list:
        """The vhosts whose queues, exchanges, bindings, policies and parameters the user is shown:
        all for administrators, else the login vhosts, monitoring users included (RabbitMQ's
        filter_vhost)."""
        if self.is_admin:
            return [v for _n, v in sorted(self.broker.vhosts.items())]
        return self.login_vhosts()


def body_too_large(limit: int, size) -> ApiError:
    """413, with the reason RabbitMQ gives for a body over its max_body_size. RabbitMQ reads up to
    the cap before it refuses (400 in 4.x; 3.10 fails with 500); here the refusal comes before a
    byte is read when Content-Length says it, and as soon as the cap is passed otherwise, and the
    connection is closed after the answer (service.py: no lingering read)."""
    log.warning("HTTP API: request exceeded maximum allowed payload size (limit: %d bytes, payload size: %s "
                "bytes)", limit, size if size is not None else "more")
    return ApiError(413, "payload_too_large", "Exceeded HTTP request body size limit")


# ---------------------------------------------------------------------------------------- access rules

def _channel_vhost(r: Req, v) -> None:
    """RabbitMQ runs get, publish and the aliveness test over an internal AMQP connection of the
    user: an administrator without permissions in the vhost cannot open it."""
    if not access.vhost_access(r.broker, r.user, v.name):
        raise not_authorised("Access refused.")


def ANY(r: Req):
    pass


def ADMIN(r: Req):
    if not r.is_admin:
        raise not_authorised("Not administrator user")


def MONITOR(r: Req):
    if not r.is_monitor:
        raise not_authorised("Not monitor user")


def _vhost_param_ok(r: Req, visible: bool) -> bool:
    name = r.params.get("vhost")
    if name is None or name not in r.broker.vhosts:
        return True             # no vhost, or an unknown one: the handler answers 404
    if visible and r.is_monitor:
        return True
    return access.vhost_access(r.broker, r.user, name)


def VHOST(r: Req):
    if not (r.is_admin or _vhost_param_ok(r, False)):
        raise not_authorised("User not authorised to access virtual host")


def VHOST_VISIBLE(r: Req):
    if not (r.is_admin or _vhost_param_ok(r, True)):
        raise not_authorised("User not authorised to access virtual host")


def POLICIES(r: Req):
    if not (r.is_admin or (r.is_policymaker and _vhost_param_ok(r, False))):
        raise not_authorised("User not authorised to access object")


def GLOBAL_PARAMS(r: Req):
    if not r.is_policymaker:
        raise not_authorised("User not authorised to access object")


def NONE(r: Req):
    pass


def user_item_allowed(r: Req, owner: str | None) -> bool:
    """RabbitMQ's rule for an object that belongs to a user (a connection, a channel, a user's
    limits): its owner may read it and delete it; any other user needs the monitoring tag to read
    it and the administrator tag to delete it. An object that does not exist has no owner, so a user
    without the tag is refused it (401) rather than told it is missing (404)."""
    if owner is not None and owner == r.user.name:
        return True
    return r.is_admin if r.method == "DELETE" else r.is_monitor


def USER_ITEM(r: Req):
    """A user's own item named by :user in the path (user-limits/:user)."""
    if not user_item_allowed(r, r.params.get("user")):
        raise not_authorised("User not authorised to access object")


# ---------------------------------------------------------------------------------------- authentication

def authenticate(m, request: web.Request):
    """The user of a request with basic auth, or an ApiError as RabbitMQ answers it."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        raise ApiError(401, "", "", {"WWW-Authenticate": REALM})
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        username, _, password = decoded.partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError(401, "", "", {"WWW-Authenticate": REALM}) from None
    user = m.broker.users.authenticate(username, password)
    m.broker.counters.login("http", user is not None)     # rabbitmq_auth_attempts_*{protocol="http"}
    if user is None:
        log.warning("HTTP access denied: user '%s' - invalid credentials", username)
        # RabbitMQ 3.10 says "Login failed" here, 3.13+ "Not_Authorized"; usagictl reads the former
        raise ApiError(401, "not_authorized", "Login failed", {"WWW-Authenticate": REALM})
    if username in m.broker.config.loopback_users and not is_loopback(request.remote or ""):
        raise not_authorised("User can only log in via localhost")
    if not any(t in MGMT_TAGS for t in user.tags):
        raise not_authorised("Not management user")
    return user


# ---------------------------------------------------------------------------------------- dispatch

# A browser says where a request comes from (Sec-Fetch-Site, which a page's script cannot set). A
# change asked for by another site's page is a forged request: a form or a text/plain fetch there
# carries the credentials the browser remembers for this API (basic auth typed at its prompt), and
# such "simple" requests need no CORS preflight. The dashboard's own requests are same-origin, and
# the API answers no CORS preflight, so no working browser client sends a cross-site change;
# clients that are not browsers send no such header.
CROSS_SITE = ("cross-site", "same-site")


def cross_site() -> ApiError:
    log.warning("HTTP API: a change requested by another site's page refused")
    return ApiError(403, "forbidden", "Cross-site request refused")

def split_path(raw_path: str) -> list | None:
    path = raw_path.split("?", 1)[0]
    if path == "/api":
        return []
    if not path.startswith("/api/"):
        return None
    parts = path[5:].split("/")
    if parts and parts[-1] == "":
        parts.pop()
    return [urllib.parse.unquote(p, errors="surrogateescape") for p in parts]


async def dispatch(m, request: web.Request) -> web.StreamResponse:
    segs = split_path(request.raw_path)
    if segs is None:
        return error_response(not_found())
    if not segs:
        return web.Response(text=API_INDEX, content_type="text/html")
    route, params = R.resolve(segs)
    if route is None:
        return error_response(not_found())
    method = request.method
    if method == "OPTIONS":
        return web.Response(status=200, headers={"Allow": route.allow})
    entry = route.handlers.get("GET" if method == "HEAD" else method)
    if entry is None:
        return web.Response(status=405, headers={"Allow": route.allow})
    fn, access, accept = entry
    if method not in ("GET", "HEAD") and request.headers.get("Sec-Fetch-Site", "").lower() in CROSS_SITE:
        return error_response(cross_site())
    r = None
    try:
        # who asks and whether they may, before a byte of the body is read (RabbitMQ: 401 first)
        user = None if access is NONE else authenticate(m, request)
        r = Req(m, request, params, user)
        access(r)
        if method == "GET" or method == "HEAD":
            result = fn(r)
            if inspect.isawaitable(result):
                result = await result
        else:
            if method in ("PUT", "POST") and not content_type_accepted(accept, request.headers.get("Content-Type")):
                return web.Response(status=415)
            if getattr(fn, "one_at_a_time", False):
                # a definitions import: one at a time, each checked against what the one before it
                # left. The body is read first, so an upload that stalls holds up nobody else's
                r.bulk = True
                await r.load_body()
                async with m.import_lock:
                    result = await _write(m, r, fn, loaded=True)
            else:
                result = await _write(m, r, fn)
    except CommitFailed as e:
        log.error("management API %s %s: %s", method, request.path, e)
        return error_response(ApiError(500, "internal_server_error", str(e)))
    except ApiError as e:
        if not e.error:     # no credentials: an empty 401 with the realm
            return web.Response(status=e.status, headers=e.headers)
        return error_response(e)
    except AMQPError as e:
        return error_response(amqp_error(e))
    except Exception as e:  # a bug: say so in RabbitMQ's shape rather than drop the connection
        log.exception("management API %s %s failed", method, request.path)
        return error_response(ApiError(500, "internal_server_error", str(e)))
    return await render(r, result)


async def _write(m, r: Req, fn, loaded: bool = False):
    """A PUT, POST or DELETE: the body read and parsed, the operation run, and the answer held until
    the commit that holds what it wrote (a 2xx to a write promises it is durable)."""
    if r.method in ("PUT", "POST") and not loaded:
        await r.load_body()
    recorded = m.broker.recorded()
    result = fn(r)
    if inspect.isawaitable(result):
        result = await result
    if m.broker.recorded() != recorded:
        await m.durable()
    return result


async def render(r: Req, result) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if isinstance(result, Reply):
        if result.body is None:
            return web.Response(status=result.status, headers=result.headers)
        return json_response(result.status, result.body, result.headers)
    if isinstance(result, Listing):
        body = Body(r.request)
        try:
            await list_reply(r, result, body)
        except ApiError as e:
            if body.resp is not None:
                raise
            return error_response(e)
        except Exception as e:
            if body.resp is not None:       # the answer has begun: it can only be cut short
                raise
            log.exception("management API %s %s failed", r.method, r.request.path)
            return error_response(ApiError(500, "internal_server_error", str(e)))
        return await body.finish()
    if isinstance(result, dict):
        return json_response(200, columns(r, [result])[0])
    return json_response(200, result)


def columns(r: Req, items: list) -> list:
    cols = r.query.get("columns")
    if not cols:
        return items
    wanted = [c for c in cols.split(",") if c]
    return [_columns(it, wanted) for it in items]


def _columns(it: dict, wanted: list) -> dict:
    d = {}
    for c in wanted:
        v = get_path(it, c)
        if v is None and "." not in c and c not in it:
            continue
        cur = d
        parts = c.split(".")
        for p in parts[:-1]:
            nxt = cur.get(p)
            if not isinstance(nxt, dict):       # ("name,name.a": the later path wins)
                nxt = cur[p] = {}
            cur = nxt
        cur[parts[-1]] = v
    return d


def _sort_key(v):
    if v is None:
        return (0, "")
    if isinstance(v, bool):
        return (1, int(v))
    if isinstance(v, (int, float)):
        return (1, v)
    if isinstance(v, str):
        return (2, v)
    return (3, json.dumps(v, sort_keys=True, default=str))


def _page_params(r: Req) -> tuple:
    page, page_size = r.query.get("page", "1"), r.query.get("page_size", "100")
    # integers as Erlang reads them ("+5" too); int() would also take " 1" and "1_0"
    if not all(v.isascii() and v.removeprefix("+").isdigit() for v in (page, page_size)):
        raise bad_request("Pagination parameters are invalid")
    page, page_size = int(page), int(page_size)
    if page < 1 or page_size < 1 or page_size > 500:
        raise bad_request("Pagination parameters are invalid")
    return page, page_size


WRITE_AT = 1 << 16      # encoded items are handed to the answer in pieces of about this size


async def write_items(body: Body, items, render, pacer: slices.Pacer, head: bytes = b"", tail: bytes = b""):
    """`head`, the items rendered as JSON and separated by commas, `tail`: written in pieces of about
    WRITE_AT bytes, one item per step of the pacer's slices."""
    pieces, size = [head], len(head)
    for i, o in enumerate(items):
        piece = dumps(render(o))
        if i:
            pieces.append(b",")
        pieces.append(piece)
        size += len(piece)
        if size >= WRITE_AT:
            await body.write(b"".join(pieces))
            pieces, size = [], 0
        if pacer.due():
            await pacer.pause()
    pieces.append(tail)
    data = b"".join(pieces)
    if data:
        await body.write(data)


async def list_reply(r: Req, listing: Listing, body: Body):
    """Write a listing's JSON into `body`: its objects gathered, filtered by name (with a page),
    sorted, paginated, rendered, cut to `columns` and encoded one object per step, a slice at a
    time (mgmt.slices). RabbitMQ's shapes: a JSON array, or with `page` an object holding the page
    and the counts. Errors (400) are all found before the first byte is written."""
    pacer = r.pacer
    query = r.query
    reverse = parse_bool(query.get("sort_reverse"), False)
    paged = "page" in query
    if paged:
        page, page_size = _page_params(r)
    objs = []
    for o in listing.items:
        objs.append(o)
        if pacer.due():
            await pacer.pause()
    total = len(objs)
    render = listing.render
    if render is not None and listing.prepare is not None:
        await listing.prepare(pacer)
    as_json = render if render is not None else _same

    name = query.get("name") if paged else None
    if name:
        name_of = listing.name or (lambda o: as_json(o).get("name", ""))
        if parse_bool(query.get("use_regex"), False):
            objs = await regex_filter(objs, name, name_of, pacer)
        else:
            needle = name.lower()
            kept = []
            for o in objs:
                if needle in str(name_of(o)).lower():
                    kept.append(o)
                if pacer.due():
                    await pacer.pause()
            objs = kept

    sort = query.get("sort")
    keys = [sort] if sort else list(listing.default_sort or ())
    if keys:
        getters = [listing.fields.get(k) for k in keys]
        if all(g is not None for g in getters):
            def key(o):
                return tuple(_sort_key(g(o)) for g in getters)
        else:
            def key(o):
                it = as_json(o)
                return tuple(_sort_key(g(o) if g is not None else get_path(it, k)) for g, k in zip(getters, keys))
        objs = await slices.sort(objs, key, pacer, reverse)
    elif reverse:
        objs.reverse()

    if paged:
        filtered = len(objs)
        page_count = max(1, math.ceil(filtered / page_size)) if filtered else 0
        if filtered and page > page_count:
            raise bad_request("Page out of range")
        objs = objs[(page - 1) * page_size:page * page_size]
        await body.write(b'{"filtered_count":%d,"item_count":%d,"items":[' % (filtered, len(objs)))
    else:
        await body.write(b"[")
    cols = query.get("columns")
    wanted = [c for c in cols.split(",") if c] if cols else None
    await write_items(body, objs, as_json if wanted is None else (lambda o: _columns(as_json(o), wanted)), pacer)
    if paged:
        await body.write(b'],"page":%d,"page_count":%d,"page_size":%d,"total_count":%d}'
                         % (page, page_count, page_size, total))
    else:
        await body.write(b"]")


def _same(o):
    return o


# a `use_regex` name filter may spend this long matching, in all, on one listing: ordinary patterns
# take 1-10 us a name, so they never come near it; patterns slower than model.patterns.EXPENSIVE
# (20 us) a name are throttled there, so only those just under it can reach it (see regex_filter)
FILTER_BUDGET_BASE = 0.02          # seconds
FILTER_BUDGET_PER_ITEM = 0.00002   # seconds per listed item, as much as an unflagged match may take


async def regex_filter(items: list, name: str, name_of, pacer: slices.Pacer) -> list:
    """The items whose name the user's pattern matches (caseless, as RabbitMQ's filter).

    Each match has its bounded cost (model.patterns) and all of them together a budget in
    proportion to the listing, spent a slice at a time (only the time spent matching counts). A
    name whose match runs out of its own budget is left out, as RabbitMQ leaves out a name whose
    PCRE match hits the match limit; but when the listing's budget runs out, the answer would be
    missing names the pattern does match, so the request fails with 400 and says why rather than
    answer a silently incomplete list."""
    if len(name) > patterns.MAX_PATTERN_LENGTH:
        raise ApiError(400, "invalid_pagination_parameters", "name filter regex is too long")
    try:
        rx = patterns.compile_pattern(name, caseless=True)
    except patterns.PatternError:
        raise bad_request("Pagination parameters are invalid") from None
    budget = patterns.Budget(FILTER_BUDGET_BASE + FILTER_BUDGET_PER_ITEM * len(items))
    out = []
    test, MATCH, SKIPPED = rx.test, patterns.MATCH, patterns.SKIPPED
    for it in items:
        res = test(str(name_of(it)), budget)
        if res == MATCH:
            out.append(it)
        elif res == SKIPPED and budget.exhausted:
            raise ApiError(400, "invalid_pagination_parameters",
                           "name filter regex is too expensive: it ran out of its time budget")
        if pacer.due():
            left = budget.remaining             # the listing's budget does not run while others have their turn
            await pacer.pause()
            budget = patterns.Budget(left)
    return out


API_INDEX = ("<!DOCTYPE html><html><head><title>RabbitMQ Management HTTP API</title></head><body>"
             "<h1>RabbitMQ Management HTTP API (Usagi)</h1><p>The API lives under <code>/api/</code>: "
             "<code>/api/overview</code>, <code>/api/queues</code>, <code>/api/exchanges</code>, "
             "<code>/api/bindings</code>, <code>/api/vhosts</code>, <code>/api/users</code>, "
             "<code>/api/definitions</code> and the rest of RabbitMQ's paths.</p></body></html>")


# ======================================================================================== handlers

# ---------------------------------------------------------------------------------------- overview, node

@get("overview", ANY)
async def overview(r: Req):
    r.ranged()
    vhosts = r.visible_vhosts()
    sums = await queue_sums(vhosts, r.pacer)
    return r.view.overview(vhosts, sums, await r.pacer.drain(r.m.sampler.totals_steps()))


@get("cluster-name", ANY)
def cluster_name(r: Req):
    return {"name": r.broker.server_properties.get("cluster_name", r.m.node)}


@put("cluster-name", ADMIN)
def set_cluster_name(r: Req):
    body = r.body()
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request("[{key_missing,name}]")
    r.broker.set_global_parameter("cluster_name", name)     # stored: it survives a restart
    return Reply(204)


def _cluster_nodes(r: Req, me: dict) -> list:
    """The nodes of a cluster as /api/nodes lists them: this leader's full entry (`me`), and every
    other member, running or not, as RabbitMQ lists its disc nodes (their figures are theirs). The
    leader's entry also counts the leader changes it has seen since it started, and gives the last
    one (`usagi_last_leader_change`: time in ms, leader, epoch, previous leader)."""
    items = [me]
    c = r.broker.cluster
    if c is None:
        return items
    st = c.status()
    for n in st["nodes"]:
        if n["role"] == "leader":
            me.update(usagi_role="leader", usagi_in_sync=True, usagi_lag=0, usagi_epoch=st["epoch"],
                      usagi_leader_changes=st.get("leader_changes", 0),
                      usagi_last_leader_change=st.get("last_leader_change"))
            continue
        items.append({"name": n["name"], "type": "disc", "running": n["running"], "cluster_links": [],
                      "being_drained": False, "usagi_role": n["role"], "usagi_in_sync": n["in_sync"],
                      "usagi_lag": n["lag"], "usagi_epoch": n.get("epoch")})
    return items


@get("nodes", MONITOR)
def nodes(r: Req):
    return Listing(_cluster_nodes(r, r.ranged(True).node_json()), ("name",))


@get("nodes/:node", MONITOR)
def node(r: Req):
    r.ranged(True)
    if r.p("node") != r.m.node:
        if r.broker.cluster is not None:
            for n in _cluster_nodes(r, {})[1:]:
                if n["name"] == r.p("node"):
                    return n
        raise not_found()
    return r.view.node_json()


@get("nodes/:node/memory", MONITOR)
def node_memory(r: Req):
    if r.p("node") != r.m.node:
        raise not_found()
    return {"memory": nodectl.memory_breakdown(r.broker)}


@get("extensions", ANY)
def extensions(r: Req):
    return []


@get("auth", NONE)
def auth_settings(r: Req):
    return {"oauth_enabled": False, "oauth_disable_basic_auth": False}


@get("whoami", ANY)
def whoami(r: Req):
    return {"name": r.user.name, "tags": list(r.user.tags), "is_internal_user": True}


# What RabbitMQ 3.10 lists (GET /api/feature-flags, rabbitmqctl list_feature_flags): the features
# behind them are how Usagi always behaves, so all are enabled.
FEATURE_FLAGS = (
    ("classic_mirrored_queue_version", "rabbit", "Classic mirrored queues take a queue version", ""),
    ("drop_unroutable_metric", "rabbitmq_management_agent", "Unroutable publishes that are dropped are counted",
     ""),
    ("empty_basic_get_metric", "rabbitmq_management_agent", "basic.get on an empty queue is counted", ""),
    ("implicit_default_bindings", "rabbit", "The default exchange's bindings are implicit", ""),
    ("maintenance_mode_status", "rabbit", "Nodes have a maintenance mode status", ""),
    ("quorum_queue", "rabbit", "Queues of type quorum", "https://www.rabbitmq.com/quorum-queues.html"),
    ("stream_queue", "rabbit", "Queues of type stream", "https://www.rabbitmq.com/stream.html"),
    ("user_limits", "rabbit", "Connection and channel limits per user", ""),
    ("virtual_host_metadata", "rabbit", "Virtual hosts have a description, tags and a default queue type", ""),
)


@get("feature-flags", ADMIN)
def feature_flags(r: Req):
    return Listing([{"name": name, "desc": desc, "doc_url": url, "state": "enabled", "stability": "stable",
                     "provided_by": app} for name, app, desc, url in FEATURE_FLAGS], ("name",))


# ---------------------------------------------------------------------------------------- health checks

def _failed(body: dict) -> Reply:
    return Reply(503, dict(body, status="failed"))


def _alarm_resources(r: Req) -> list:
    """The alarms in effect, named as RabbitMQ's health checks name them."""
    return [{"node": r.m.node, "resource": "disk space" if a == "disk" else a} for a in sorted(r.broker.alarms)]


@get("health/checks/alarms", ANY)
def hc_alarms(r: Req):
    alarms = _alarm_resources(r)
    if alarms:
        return _failed({"reason": "There are alarms in effect in the cluster", "alarms": alarms})
    return {"status": "ok"}


@get("health/checks/local-alarms", ANY)
def hc_local_alarms(r: Req):
    alarms = _alarm_resources(r)
    if alarms:
        return _failed({"reason": "There are alarms in effect on the node", "alarms": alarms})
    return {"status": "ok"}


@get("health/checks/virtual-hosts", ANY)
def hc_vhosts(r: Req):
    return {"status": "ok"}


@get("health/checks/node-is-quorum-critical", ANY)
def hc_quorum(r: Req):
    c = r.broker.cluster
    why = c.quorum_critical() if c is not None else None
    if why:
        # (a cluster leader: the queues are all of them, named as RabbitMQ names them in this answer)
        return _failed({"reason": why, "queues": []})
    return {"status": "ok"}


@get("health/checks/node-is-mirror-sync-critical", ANY)
def hc_mirror(r: Req):
    return {"status": "ok"}


@get("health/checks/is-in-service", ANY)
def hc_in_service(r: Req):
    return {"status": "ok"}


@get("health/checks/ready-to-serve-clients", ANY)
def hc_ready(r: Req):
    return {"status": "ok"}


@get("health/checks/port-listener/:port", ANY)
def hc_port(r: Req):
    try:
        port = int(r.p("port"))
    except ValueError:
        raise bad_request(f"Invalid port: {r.p('port')}") from None
    ports = sorted({p for _x, _h, p in r.m.amqp_listeners() + r.m.http_listeners()})
    if port in ports:
        return {"status": "ok", "port": port}
    return _failed({"reason": "No active listener", "missing": port, "ports": ports})


@get("health/checks/protocol-listener/:protocol", ANY)
def hc_protocol(r: Req):
    aliases = {"amqp": "amqp", "amqp091": "amqp", "amqp0.9.1": "amqp", "amqp0-9-1": "amqp",
               "amqps": "amqp/ssl", "http": "http", "management": "http", "prometheus": "http/prometheus",
               "http/prometheus": "http/prometheus"}
    want = r.p("protocol").lower()
    protocols = sorted({p for p, _h, _x in r.m.amqp_listeners() + r.m.http_listeners()})
    if aliases.get(want, want) in protocols:
        return {"status": "ok", "protocol": r.p("protocol")}
    return _failed({"reason": "No active listener", "missing": r.p("protocol"), "protocols": protocols})


@get("health/checks/certificate-expiration/:within/:unit", ANY)
def hc_cert(r: Req):
    return {"status": "ok"}


@get("healthchecks/node", ANY)
def healthchecks_node(r: Req):
    return {"status": "ok"}


@get("aliveness-test/:vhost", VHOST)
def aliveness(r: Req):
    v = r.vhost()
    _channel_vhost(r, v)
    try:
        # what declaring the queue, publishing to it and getting the message back meet
        access.declare_queue(r.broker, r.user, v, ops.ALIVENESS_QUEUE, {})
        access.check(r.broker, r.user, v.name, "write", "exchange", "")
        access.check(r.broker, r.user, v.name, "read", "queue", ops.ALIVENESS_QUEUE)
    except ChannelError as e:
        raise channel_error(e) from None
    ok, why = ops.aliveness_test(r.broker, v)
    if ok:
        return {"status": "ok"}
    return _failed({"reason": why})


# ---------------------------------------------------------------------------------------- vhosts

@get("vhosts", ANY)
def vhosts(r: Req):
    r.ranged(error="invalid_range_parameters")
    return Listing(r.visible_vhosts(), ("name",), render=r.view.vhost, fields=BY_NAME, name=_name)


@get("vhosts/:vhost", ADMIN)
def vhost_get(r: Req):
    v = r.vhost()
    return r.ranged().vhost(v)


@put("vhosts/:vhost", ADMIN)
def vhost_put(r: Req):
    return created(ops.put_vhost(r.broker, r.p("vhost"), r.body(), r.user.name))


@delete("vhosts/:vhost", ADMIN)
def vhost_delete(r: Req):
    if not r.broker.delete_vhost(r.p("vhost")):
        raise not_found()
    return Reply(204)


@get("vhosts/:vhost/permissions", ADMIN)
def vhost_permissions(r: Req):
    v = r.vhost()
    return Listing([ops.permission_json(p) for (_u, vh), p in r.broker.users.permissions.items()
                    if vh == v.name], ("user",))


@get("vhosts/:vhost/topic-permissions", ADMIN)
def vhost_topic_permissions(r: Req):
    v = r.vhost()
    return Listing([dict(p) for (_u, vh, _x), p in r.broker.users.topic_permissions.items() if vh == v.name],
                   ("user",))


def _visible_connections(r: Req, vhost: str | None = None):
    """The open connections the user may see (a generator over a copy: listings walk it in slices)."""
    for c in list(r.broker.connections):
        if c.closed:
            continue
        if vhost is not None and c.vhost != vhost:
            continue
        if not r.is_monitor and (c.user is None or c.user.name != r.user.name):
            continue
        yield c


def _channels_of(connections):
    for c in connections:
        yield from list(c.channels.values())


def _name(obj):
    return obj.name


BY_NAME = {"name": _name}
BY_VHOST_AND_NAME = {"vhost": lambda o: o.vhost, "name": _name}
CHANNEL_FIELDS = {"name": View.channel_name}


def _connections(r: Req, source) -> Listing:
    return Listing(source, ("name",), render=r.view.connection, fields=BY_NAME, name=_name)


def _channels(r: Req, source) -> Listing:
    return Listing(source, ("name",), render=r.view.channel, fields=CHANNEL_FIELDS, name=View.channel_name)


@get("vhosts/:vhost/connections", VHOST)
def vhost_connections(r: Req):
    r.ranged(True)
    v = r.vhost()
    return _connections(r, _visible_connections(r, v.name))


@get("vhosts/:vhost/channels", VHOST)
def vhost_channels(r: Req):
    r.ranged()
    v = r.vhost()
    return _channels(r, _channels_of(_visible_connections(r, v.name)))


# ---------------------------------------------------------------------------------------- users, permissions

@get("users", ADMIN)
def users(r: Req):
    return Listing(list(r.broker.users.users.values()), ("name",), render=View.user, fields=BY_NAME, name=_name)


@get("users/without-permissions", ADMIN)
def users_without_permissions(r: Req):
    with_perms = {u for (u, _v) in r.broker.users.permissions}
    return Listing([u for n, u in r.broker.users.users.items() if n not in with_perms], ("name",),
                   render=View.user, fields=BY_NAME, name=_name)


@post("users/bulk-delete", ADMIN)
def users_bulk_delete(r: Req):
    body = r.body()
    names = body.get("users")
    if not isinstance(names, list):
        raise bad_request("[{key_missing,users}]")
    for n in names:
        if isinstance(n, str):
            r.broker.delete_user(n)
    return Reply(204)


def _user(r: Req):
    u = r.broker.users.users.get(r.p("user"))
    if u is None:
        raise not_found()
    return u


@get("users/:user", ADMIN)
def user_get(r: Req):
    return r.view.user(_user(r))


@put("users/:user", ADMIN)
def user_put(r: Req):
    return created(ops.put_user(r.broker, r.p("user"), r.body()))


@delete("users/:user", ADMIN)
def user_delete(r: Req):
    if not r.broker.delete_user(r.p("user")):
        raise not_found()
    return Reply(204)


@get("users/:user/permissions", ADMIN)
def user_permissions(r: Req):
    u = _user(r)
    return Listing([ops.permission_json(p) for (un, _v), p in r.broker.users.permissions.items() if un == u.name],
                   ("vhost",))


@get("users/:user/topic-permissions", ADMIN)
def user_topic_permissions(r: Req):
    u = _user(r)
    return Listing([dict(p) for (un, _v, _x), p in r.broker.users.topic_permissions.items() if un == u.name],
                   ("vhost",))


@get("permissions", ADMIN)
def permissions(r: Req):
    return Listing(list(r.broker.users.permissions.values()), ("vhost", "user"), render=ops.permission_json,
                   fields={"vhost": lambda p: p.vhost, "user": lambda p: p.user}, name=lambda p: "")


def _permission(r: Req):
    p = r.broker.users.permission(r.p("user"), r.p("vhost"))
    if p is None:
        raise not_found()
    return p


@get("permissions/:vhost/:user", ADMIN)
def permission_get(r: Req):
    return ops.permission_json(_permission(r))


@put("permissions/:vhost/:user", ADMIN)
def permission_put(r: Req):
    return created(ops.put_permission(r.broker, r.p("user"), r.p("vhost"), r.body()))


@delete("permissions/:vhost/:user", ADMIN)
def permission_delete(r: Req):
    if not r.broker.clear_permissions(r.p("user"), r.p("vhost")):
        raise not_found()
    return Reply(204)


@get("topic-permissions", ADMIN)
def topic_permissions(r: Req):
    return Listing([dict(p) for p in r.broker.users.topic_permissions.values()], ("vhost", "user"))


def _topic_permissions(r: Req) -> list:
    tp = r.broker.users.topic_permissions
    return [k for k in tp if k[0] == r.p("user") and k[1] == r.p("vhost")]


@get("topic-permissions/:vhost/:user", ADMIN)
def topic_permission_get(r: Req):
    keys = _topic_permissions(r)
    if not keys:
        raise not_found()
    return [dict(r.broker.users.topic_permissions[k]) for k in keys]


@put("topic-permissions/:vhost/:user", ADMIN)
def topic_permission_put(r: Req):
    return created(ops.put_topic_permission(r.broker, r.p("user"), r.p("vhost"), r.body()))


@delete("topic-permissions/:vhost/:user", ADMIN)
def topic_permission_delete(r: Req):
    if not r.broker.clear_topic_permissions(r.p("user"), r.p("vhost")):
        raise not_found()
    return Reply(204)


@get("topic-permissions/:vhost/:user/:exchange", ADMIN)
def topic_permission_exchange_get(r: Req):
    return topic_permission_get(r)


@delete("topic-permissions/:vhost/:user/:exchange", ADMIN)
def topic_permission_exchange_delete(r: Req):
    """The user's topic permission on one exchange: 404 when the user has none in the vhost (as
    RabbitMQ, which looks at the user's and vhost's, not the exchange's), else 204."""
    if not _topic_permissions(r):
        raise not_found()
    r.broker.clear_topic_permissions(r.p("user"), r.p("vhost"), r.p("exchange"))
    return Reply(204)


# ---------------------------------------------------------------------------------------- exchanges

def _exchange(r: Req, v, key: str = "exchange"):
    x = v.exchanges.get(r.xname(key))
    if x is None:
        raise not_found()
    return x


def _exchanges_of(vhosts):
    for v in vhosts:
        yield from list(v.exchanges.values())


def _exchanges(r: Req, vhosts) -> Listing:
    return Listing(_exchanges_of(vhosts), render=r.view.exchange, fields=BY_VHOST_AND_NAME, name=_name)


@get("exchanges", ANY)
def exchanges(r: Req):
    r.ranged(error="invalid_range_parameters")
    return _exchanges(r, r.listed_vhosts())


@get("exchanges/:vhost", VHOST)
def exchanges_vhost(r: Req):
    r.ranged(error="invalid_range_parameters")
    return _exchanges(r, [r.vhost()])


@get("exchanges/:vhost/:exchange", VHOST)
def exchange_get(r: Req):
    x = _exchange(r, r.vhost())
    return r.ranged().exchange(x, detail=True)


def _arguments(body: dict) -> dict:
    """The `arguments` of a body as an AMQP table: RabbitMQ converts them before anything else
    and refuses a null anywhere in them."""
    args = body.get("arguments") or {}
    if not isinstance(args, dict):
        raise bad_request("arguments must be a JSON object")
    ops.check_no_null(args)
    return args


@put("exchanges/:vhost/:exchange", VHOST)
def exchange_put(r: Req):
    v = r.vhost(ApiError(404, "not_found", "vhost_not_found"))
    name = r.xname()
    body = r.body()
    type_, durable, auto_delete, internal, args = checks.exchange_body(name, body)
    access.declare_exchange(r.broker, r.user, v, name, args, from_json=True)
    existed = name in v.exchanges
    r.broker.declare_exchange(v, name, type_, durable, auto_delete, internal, args)
    return created(not existed)


@delete("exchanges/:vhost/:exchange", VHOST)
def exchange_delete(r: Req):
    v = r.vhost()
    x = _exchange(r, v)
    access.delete_exchange(r.broker, r.user, v, x.name)
    r.broker.delete_exchange(v, x.name, parse_bool(r.query.get("if-unused"), False))
    return Reply(204)


@post("exchanges/:vhost/:exchange/publish", VHOST)
def exchange_publish(r: Req):
    v = r.vhost(ApiError(404, "not_found", "vhost_not_found"))
    if r.xname() not in v.exchanges:
        raise ApiError(404, "not_found", "exchange_not_found")      # as RabbitMQ 4.x, before the body
    _channel_vhost(r, v)
    routed = ops.publish(r.broker, r.user, v, r.xname(), r.body())
    return {"routed": routed}


@get("exchanges/:vhost/:exchange/bindings/source", VHOST)
async def exchange_bindings_source(r: Req):
    v = r.vhost()
    x = _exchange(r, v)
    if not x.name:          # the default exchange's bindings are implicit: one per queue
        return await _bindings(r, [v], lambda v: ((v.name, "", q, q.name, {}) for q in list(v.queues.values())))
    return await _bindings(r, [v], lambda v: ((v.name, x.name, b.destination, b.routing_key, b.arguments)
                                              for b in list(x.bindings.values())))


@get("exchanges/:vhost/:exchange/bindings/destination", VHOST)
async def exchange_bindings_destination(r: Req):
    v = r.vhost()
    x = _exchange(r, v)
    return await _bindings(r, [v], lambda v: ((v.name, b.source.name, x, b.routing_key, b.arguments)
                                              for b in list(x.incoming.values())))


# ---------------------------------------------------------------------------------------- queues

def _queue(r: Req, v, key: str = "queue") -> Queue:
    q = v.queues.get(r.p(key))
    if q is None:
        raise not_found()
    return q


def _queues_of(vhosts):
    for v in vhosts:
        yield from list(v.queues.values())


def _queues(r: Req, vhosts) -> Listing:
    return Listing(_queues_of(vhosts), render=r.view.queue, fields=BY_VHOST_AND_NAME, name=_name,
                   prepare=r.view.prepare)


@get("queues", ANY)
def queues(r: Req):
    r.ranged(True, "invalid_range_parameters")
    return _queues(r, r.listed_vhosts())


@get("queues/:vhost", VHOST)
def queues_vhost(r: Req):
    r.ranged(True, "invalid_range_parameters")
    return _queues(r, [r.vhost()])


@get("queues/:vhost/:queue", VHOST)
async def queue_get(r: Req):
    q = _queue(r, r.vhost())
    await r.ranged(True).prepare(r.pacer)
    return r.view.queue(q, detail=True)


@put("queues/:vhost/:queue", VHOST)
def queue_put(r: Req):
    v = r.vhost(ApiError(404, "not_found", "vhost_not_found"))
    name = r.p("queue")
    body = r.body()
    durable, auto_delete, args = checks.queue_body(name, body)
    access.declare_queue(r.broker, r.user, v, name, args, from_json=True)
    existed = name in v.queues
    # an existing queue is compared with the declaration, exclusivity first (no connection owns it)
    r.broker.declare_queue(v, name, durable, False, auto_delete, args)
    return created(not existed)


@delete("queues/:vhost/:queue", VHOST)
def queue_delete(r: Req):
    v = r.vhost()
    q = access.delete_queue(r.broker, r.user, v, _queue(r, v).name, None)
    r.broker.delete_queue(q, parse_bool(r.query.get("if-unused"), False),
                          parse_bool(r.query.get("if-empty"), False))
    r.broker.run_dirty()
    return Reply(204)


@delete("queues/:vhost/:queue/contents", VHOST)
def queue_purge(r: Req):
    v = r.vhost()
    q = access.readable_queue(r.broker, r.user, v, _queue(r, v).name, None)
    r.broker.purge_queue(q)
    return Reply(204)


def _queue_to_read(r: Req, v) -> Queue:
    """The queue of POST .../get and GET .../peek, as basic.get would meet it (read permission,
    exclusivity), errors reported as RabbitMQ reports those of its internal channel."""
    _channel_vhost(r, v)
    try:
        return access.readable_queue(r.broker, r.user, v, r.p("queue"), None)
    except ChannelError as e:
        raise channel_error(e) from None


@post("queues/:vhost/:queue/get", VHOST)
async def queue_get_messages(r: Req):
    v = r.vhost(ApiError(404, "not_found", "vhost_not_found"))
    if r.p("queue") not in v.queues:
        raise ApiError(404, "not_found", "queue_not_found")     # as RabbitMQ 4.x, before the body
    request = ops.get_request(r.body())
    recorded = r.broker.recorded()
    taken = await ops.get_messages(r.broker, _queue_to_read(r, v), request, r.pacer)
    if r.broker.recorded() != recorded:
        await r.m.durable()         # the removals committed before the answer's first byte
    _count, _ackmode, encoding, truncate = request
    return await _messages_reply(r, taken, encoding, truncate)


async def _messages_reply(r: Req, items, encoding: str, truncate) -> web.StreamResponse:
    """Messages as JSON, one message encoded per step of the pacer's slices (a get of a thousand
    4 MB messages is a gigabyte of base64 and JSON text: never one piece of work on the loop)."""
    body = Body(r.request)
    await write_items(body, items, lambda it: ops.message_json(it[0], it[1], it[2], encoding, truncate),
                      r.pacer, b"[", b"]")
    return await body.finish()


@get("queues/:vhost/:queue/peek", VHOST)
async def queue_peek_messages(r: Req):
    """Usagi only: the first `count` messages in delivery order, read without taking them (no
    requeue, so no redelivered flag is set); the same JSON shape as POST .../get."""
    v = r.vhost(ApiError(404, "not_found", "vhost_not_found"))
    if r.p("queue") not in v.queues:
        raise ApiError(404, "not_found", "queue_not_found")
    q = _queue_to_read(r, v)
    try:
        count = int(r.query.get("count", "50"))
        truncate = r.query.get("truncate")
        truncate = int(truncate) if truncate not in (None, "") else None
    except ValueError:
        raise bad_request("count and truncate must be integers") from None
    if count < 0 or (truncate is not None and truncate < 0):
        raise bad_request("count and truncate must not be negative")
    encoding = r.query.get("encoding", "auto")
    if encoding not in ("auto", "base64"):
        raise bad_request("Unsupported encoding. Please use auto or base64.")
    entries = q.peek_all(count) if count else []
    total = q.message_count
    items = [(msg, redelivered, max(total - i - 1, 0)) for i, (_seq, msg, redelivered) in enumerate(entries)]
    return await _messages_reply(r, items, encoding, truncate)


@post("queues/:vhost/:queue/actions", ADMIN)
def queue_actions(r: Req):
    v = r.vhost(ApiError(404, "not_found", "vhost_not_found"))
    if r.p("queue") not in v.queues:
        raise ApiError(404, "not_found", "queue_not_found")
    action = r.body().get("action")
    if action in ("sync", "cancel_sync"):
        return Reply(204)
    raise bad_request(f"Unknown action: {action}")


def _queue_binding_rows(q):
    yield (q.vhost, "", q, q.name, {})              # the default exchange's, implicit
    for b in list(q.bindings):
        yield (q.vhost, b.source.name, q, b.routing_key, b.arguments)


@get("queues/:vhost/:queue/bindings", VHOST)
async def queue_bindings(r: Req):
    v = r.vhost()
    q = _queue(r, v)
    return await _bindings(r, [v], lambda v: _queue_binding_rows(q))


# ---------------------------------------------------------------------------------------- bindings
# A binding is listed from a row (vhost, source name, destination object, routing key, arguments).
# A vhost's bindings are shown in RabbitMQ's order (source, destination type, destination, routing
# key, properties key), vhost after vhost; they are gathered and sorted a slice at a time.

def _vhost_binding_rows(v):
    for q in list(v.queues.values()):
        yield (v.name, "", q, q.name, {})           # the default exchange's, implicit
    for x in list(v.exchanges.values()):
        for b in list(x.bindings.values()):
            yield (v.name, x.name, b.destination, b.routing_key, b.arguments)


def _binding_order(row):
    _v, src, dest, rk, args = row
    return (src, "queue" if isinstance(dest, Queue) else "exchange", dest.name, rk, properties_key(rk, args))


async def _bindings(r: Req, vhosts, rows_of=_vhost_binding_rows) -> Listing:
    view, pacer = r.view, r.pacer
    out = []
    for v in vhosts:
        rows = []
        for row in rows_of(v):
            rows.append(row)
            if pacer.due():
                await pacer.pause()
        out += await slices.sort(rows, _binding_order, pacer)
    return Listing(out, None, render=lambda row: view.binding(*row), name=lambda row: "")


@get("bindings", ANY)
async def bindings(r: Req):
    return await _bindings(r, r.listed_vhosts())


@get("bindings/:vhost", VHOST)
async def bindings_vhost(r: Req):
    return await _bindings(r, [r.vhost()])


def _binding_ends(r: Req):
    v = r.vhost()
    dtype = r.p("dtype")
    if dtype not in ("q", "e"):
        raise not_found()
    src = _exchange(r, v, "source")
    if dtype == "q":
        dst = _queue(r, v, "destination")
    else:
        dst = _exchange(r, v, "destination")
    return v, src, dst


def _between(r: Req, v, src, dst) -> list:
    """The bindings from `src` to `dst` as the API shows them, in RabbitMQ's order."""
    if not src.name:
        rows = [(v.name, "", dst, dst.name, {})] if isinstance(dst, Queue) else []
    else:
        rows = [(v.name, src.name, dst, b.routing_key, b.arguments) for b in list(src.bindings.values())
                if b.destination is dst]
    rows.sort(key=_binding_order)
    return [r.view.binding(*row) for row in rows]


@get("bindings/:vhost/e/:source/:dtype/:destination", VHOST)
def bindings_between(r: Req):
    v, src, dst = _binding_ends(r)
    return Listing(_between(r, v, src, dst), None)


@post("bindings/:vhost/e/:source/:dtype/:destination", VHOST)
def binding_create(r: Req):
    v = r.vhost()
    dtype = r.p("dtype")
    if dtype not in ("q", "e"):
        raise not_found()
    body = r.body()
    rk, args = checks.binding_body(body)
    sname = r.xname("source")
    dname = r.xname("destination") if dtype == "e" else r.p("destination")
    src, dst = access.binding(r.broker, r.user, v, sname, "queue" if dtype == "q" else "exchange", dname, rk,
                              args, None)
    r.broker.bind(v, src, dst, rk, args)
    loc = urllib.parse.quote(dst.name, safe="") + "/" + properties_key(rk, args)
    return Reply(201, None, {"Location": loc})


def _find_binding(r: Req):
    v, src, dst = _binding_ends(r)
    props = r.p("props")
    for b in _between(r, v, src, dst):
        pk = b["properties_key"]
        if props == pk or props == urllib.parse.unquote(pk):
            return v, src, dst, b
    raise not_found()


@get("bindings/:vhost/e/:source/:dtype/:destination/:props", VHOST)
def binding_get(r: Req):
    return _find_binding(r)[3]


@delete("bindings/:vhost/e/:source/:dtype/:destination/:props", VHOST)
def binding_delete(r: Req):
    v, src, dst, b = _find_binding(r)
    rk, args = b["routing_key"], {}
    for binding in src.bindings.values():
        if binding.destination is dst and binding.routing_key == rk and \
                properties_key(binding.routing_key, binding.arguments) == b["properties_key"]:
            args = binding.arguments
            break
    # RabbitMQ unbinds with the binding's own key and arguments, as queue.unbind or exchange.unbind
    ends = access.binding(r.broker, r.user, v, src.name, "queue" if isinstance(dst, Queue) else "exchange",
                          dst.name, rk, args, None, unbind=True)
    if ends is not None:
        r.broker.unbind(v, src, dst, rk, args)
    return Reply(204)


# ---------------------------------------------------------------------------------------- connections, channels

def _connection(r: Req):
    name = r.p("connection")
    for c in r.broker.connections:
        if c.name == name and not c.closed:
            if not user_item_allowed(r, c.user.name if c.user is not None else None):
                raise not_authorised("User not authorised to access object")
            return c
    if not user_item_allowed(r, None):
        raise not_authorised("User not authorised to access object")
    raise not_found()


@get("connections", ANY)
def connections(r: Req):
    r.ranged(True)
    return _connections(r, _visible_connections(r))


@get("connections/:connection", ANY)
def connection_get(r: Req):
    r.ranged(True)
    return r.view.connection(_connection(r))


@delete("connections/:connection", ANY)
def connection_delete(r: Req):
    c = _connection(r)
    reason = r.request.headers.get("X-Reason") or "Closed via management plugin"
    log.info("closing connection %s on request from the management API: %s", c.name, reason)
    c.force_close(E.CONNECTION_FORCED, reason)
    return Reply(204)


@get("connections/:connection/channels", ANY)
def connection_channels(r: Req):
    r.ranged()
    c = _connection(r)
    return _channels(r, list(c.channels.values()))


@get("channels", ANY)
def channels(r: Req):
    r.ranged()
    return _channels(r, _channels_of(_visible_connections(r)))


@get("channels/:channel", ANY)
def channel_get(r: Req):
    r.ranged()
    name = r.p("channel")
    for c in list(r.broker.connections):
        if c.closed:
            continue
        for ch in c.channels.values():
            if View.channel_name(ch) == name:
                if not user_item_allowed(r, c.user.name if c.user is not None else None):
                    raise not_authorised("User not authorised to access object")
                return r.view.channel(ch)
    if not user_item_allowed(r, None):
        raise not_authorised("User not authorised to access object")
    raise not_found()


def _consumers_of(r: Req, vhosts):
    """Consumers as RabbitMQ lists them: a monitoring user sees all, others only those of their
    own channels (whichever vhost they are in)."""
    own = None if r.is_monitor else r.user.name
    for v in vhosts:
        for q in list(v.queues.values()):
            for cons in list(q.consumers):
                u = getattr(cons.channel, "user", None)
                if own is not None and (u is None or u.name != own):
                    continue
                yield cons


CONSUMER_FIELDS = {"queue.vhost": lambda c: c.queue.vhost, "queue.name": lambda c: c.queue.name,
                   "consumer_tag": lambda c: c.tag}


def _consumers(r: Req, vhosts, default_sort) -> Listing:
    return Listing(_consumers_of(r, vhosts), default_sort, render=r.view.consumer, fields=CONSUMER_FIELDS,
                   name=lambda c: "")


@get("consumers", ANY)
def consumers(r: Req):
    return _consumers(r, [v for _n, v in sorted(r.broker.vhosts.items())],
                      ("queue.vhost", "queue.name", "consumer_tag"))


@get("consumers/:vhost", ANY)
def consumers_vhost(r: Req):
    return _consumers(r, [r.vhost()], ("queue.name", "consumer_tag"))


# ---------------------------------------------------------------------------------------- policies, parameters

def _listed(r: Req, vhost: str | None):
    """Which vhosts' policies, operator policies and parameters a listing shows (filter_vhost)."""
    names = {v.name for v in r.listed_vhosts()}
    return lambda vh: (vhost is None or vh == vhost) and vh in names


def _policies(r: Req, vhost: str | None) -> list:
    shown = _listed(r, vhost)
    return [ops.policy_json(p, vh, n) for (vh, n), p in r.broker.policies.items() if shown(vh)]


# listing policies needs only access to the vhost; reading or changing one, a policymaker
@get("policies", VHOST)
def policies(r: Req):
    return Listing(_policies(r, None))


@get("policies/:vhost", VHOST)
def policies_vhost(r: Req):
    return Listing(_policies(r, r.vhost().name))


@get("policies/:vhost/:name", POLICIES)
def policy_get(r: Req):
    v = r.vhost()
    for p in _policies(r, v.name):
        if p["name"] == r.p("name"):
            return p
    raise not_found()


@put("policies/:vhost/:name", POLICIES)
def policy_put(r: Req):
    v = r.vhost(ApiError(404, "not_found", "vhost_not_found"))
    return created(ops.put_policy(r.broker, v.name, r.p("name"), r.body()))


@delete("policies/:vhost/:name", POLICIES)
def policy_delete(r: Req):
    v = r.vhost()
    if not ops.delete_policy(r.broker, v.name, r.p("name")):
        raise not_found()
    return Reply(204)


def _operator_policies(r: Req, vhost: str | None) -> list:
    shown = _listed(r, vhost)
    return [ops.policy_json(p) for (vh, _n), p in sorted(r.broker.operator_policies.items()) if shown(vh)]


# listing operator policies needs only access to the vhost; reading or changing one, an administrator
@get("operator-policies", VHOST)
def operator_policies(r: Req):
    return Listing(_operator_policies(r, None))


@get("operator-policies/:vhost", VHOST)
def operator_policies_vhost(r: Req):
    return Listing(_operator_policies(r, r.vhost().name))


@get("operator-policies/:vhost/:name", ADMIN)
def operator_policy_get(r: Req):
    for p in _operator_policies(r, r.vhost().name):
        if p["name"] == r.p("name"):
            return p
    raise not_found()


@put("operator-policies/:vhost/:name", ADMIN, accept=JSON_TYPE)
def operator_policy_put(r: Req):
    v = r.vhost(ApiError(404, "not_found", "vhost_not_found"))
    return created(ops.put_policy(r.broker, v.name, r.p("name"), r.body(), operator=True))


@delete("operator-policies/:vhost/:name", ADMIN)
def operator_policy_delete(r: Req):
    v = r.vhost()
    if not ops.delete_policy(r.broker, v.name, r.p("name"), operator=True):
        raise not_found()
    return Reply(204)


@get("vhost-limits", VHOST_VISIBLE)
def vhost_limits(r: Req):
    return [{"vhost": v.name, "value": dict(v.limits)} for v in r.visible_vhosts() if v.limits]


@get("vhost-limits/:vhost", VHOST_VISIBLE)
def vhost_limits_vhost(r: Req):
    v = r.vhost()
    return [{"vhost": v.name, "value": dict(v.limits)}] if v.limits else []


@put("vhost-limits/:vhost/:name", ADMIN, accept=JSON_TYPE)
def vhost_limit_put(r: Req):
    v = r.vhost()
    created_ = ops.set_vhost_limit(r.broker, v, r.p("name"), r.body())
    return created(created_)


@delete("vhost-limits/:vhost/:name", ADMIN)
def vhost_limit_delete(r: Req):
    v = r.vhost()
    if not ops.clear_vhost_limit(r.broker, v, r.p("name")):
        raise not_found()
    return Reply(204)


@get("user-limits", ADMIN)
def user_limits(r: Req):
    return [{"user": u.name, "value": dict(u.limits)} for _n, u in sorted(r.broker.users.users.items())
            if u.limits]


@get("user-limits/:user", USER_ITEM)       # RabbitMQ 4.x: the user, a monitoring user or an administrator
def user_limits_user(r: Req):
    u = _user(r)
    return [{"user": u.name, "value": dict(u.limits)}] if u.limits else []


@put("user-limits/:user/:name", ADMIN, accept=JSON_TYPE)
def user_limit_put(r: Req):
    u = _user(r)
    return created(ops.set_user_limit(r.broker, u, r.p("name"), r.body()))


@delete("user-limits/:user/:name", ADMIN)
def user_limit_delete(r: Req):
    u = _user(r)
    if r.p("name") not in u.limits:
        raise not_found()
    del u.limits[r.p("name")]
    r.broker.save_user(u)
    return Reply(204)


def _parameters(r: Req, vhost: str | None = None, component: str | None = None) -> list:
    """Runtime parameters of the vhosts the user is shown: they can hold credentials (federation
    and shovel URIs), so never those of another vhost."""
    shown = _listed(r, vhost)
    return [p for p in ops.parameters_list(r.broker, vhost, component) if shown(p["vhost"])]


@get("parameters", POLICIES)
def parameters(r: Req):
    return Listing(_parameters(r))


@get("parameters/:component", POLICIES)
def parameters_component(r: Req):
    return Listing(_parameters(r, component=r.p("component")))


@get("parameters/:component/:vhost", POLICIES)
def parameters_component_vhost(r: Req):
    return Listing(_parameters(r, r.vhost().name, r.p("component")))


@get("parameters/:component/:vhost/:name", POLICIES)
def parameter_get(r: Req):
    v = r.vhost()
    for p in ops.parameters_list(r.broker, v.name, r.p("component")):
        if p["name"] == r.p("name"):
            return p
    raise not_found()


@put("parameters/:component/:vhost/:name", POLICIES)
def parameter_put(r: Req):
    v = r.vhost(ApiError(404, "not_found", "vhost_not_found"))
    body = r.body()
    if "value" not in body:
        raise bad_request("[{key_missing,value}]")
    return created(ops.put_parameter(r.broker, v.name, r.p("component"), r.p("name"), body["value"]))


@delete("parameters/:component/:vhost/:name", POLICIES)
def parameter_delete(r: Req):
    v = r.vhost()
    if not ops.delete_parameter(r.broker, v.name, r.p("component"), r.p("name")):
        raise not_found()
    return Reply(204)


@get("global-parameters", GLOBAL_PARAMS)
def global_parameters(r: Req):
    return Listing(ops.global_parameters_list(r.broker), ("name",))


@get("global-parameters/:name", GLOBAL_PARAMS)
def global_parameter_get(r: Req):
    for p in ops.global_parameters_list(r.broker):
        if p["name"] == r.p("name"):
            return p
    raise not_found()


@put("global-parameters/:name", GLOBAL_PARAMS)
def global_parameter_put(r: Req):
    body = r.body()
    if "value" not in body:
        raise bad_request("[{key_missing,value}]")
    name = r.p("name")
    value = checks.global_parameter(name, body["value"])
    return created(r.broker.set_global_parameter(name, value))


@delete("global-parameters/:name", GLOBAL_PARAMS)
def global_parameter_delete(r: Req):
    if not r.broker.clear_global_parameter(r.p("name")):
        raise not_found()
    return Reply(204)


# ---------------------------------------------------------------------------------------- definitions

async def _download(r: Req, vhost_name: str | None) -> web.StreamResponse:
    """A definitions export, written a slice at a time (one queue, exchange, binding... per step)
    and streamed when large."""
    headers = {}
    fname = r.query.get("download")
    if fname:
        headers["Content-Disposition"] = f"attachment; filename={fname}"
    pacer = r.pacer
    parts = await ops.export_parts(r.broker, vhost_name, pacer)
    body = Body(r.request, headers)
    for i, (key, value) in enumerate(parts):
        await body.write((b"{" if not i else b",") + dumps(key) + b":")
        if not isinstance(value, ops.Rows):
            await body.write(dumps(value))
            continue
        await write_items(body, value.items, value.render, pacer, b"[", b"]")
    await body.write(b"}")
    return await body.finish()


@get("definitions", ADMIN)
async def definitions(r: Req):
    return await _download(r, None)


@get("all-configuration", ADMIN)
async def all_configuration(r: Req):
    return await definitions(r)


def one_at_a_time(fn):
    """A definitions import: dispatch runs them one at a time (api.dispatch, ManagementService.import_lock).
    A second import waits for the first rather than fail: clients that import concurrently (an
    operator and an orchestrator) get what they would get from RabbitMQ, each file checked against
    what the one before it left; the waiting costs nothing but the connection, its body unread."""
    fn.one_at_a_time = True
    return fn


@post("definitions", ADMIN, accept=JSON_OR_FORM)
@one_at_a_time
async def definitions_import(r: Req):
    defs = r.json("failed_to_parse_json")
    log.info("importing definitions on request from the management API (user '%s')", r.user.name)
    await r.pacer.drain(ops.import_steps(r.broker, defs, acting_user=r.user.name))
    return Reply(204)


@post("all-configuration", ADMIN, accept=JSON_OR_FORM)
@one_at_a_time
async def all_configuration_import(r: Req):
    return await definitions_import(r)


@get("definitions/:vhost", ADMIN)
async def definitions_vhost(r: Req):
    v = r.vhost(bad_request("vhost_not_found"))
    return await _download(r, v.name)


@post("definitions/:vhost", ADMIN, accept=JSON_OR_FORM)
@one_at_a_time
async def definitions_vhost_import(r: Req):
    v = r.vhost(ApiError(404, "not_found", "vhost_not_found"))
    defs = r.json("failed_to_parse_json")
    await r.pacer.drain(ops.import_steps(r.broker, defs, v.name))
    return Reply(204)


# ---------------------------------------------------------------------------------------- Usagi node control
# rabbitmqctl stop / stop_app / start_app act over Erlang distribution; usagictl uses these instead.

@post("usagi/stop", ADMIN)
def usagi_stop(r: Req):
    log.info("stop requested through the management API by user '%s'", r.user.name)
    r.m.request_stop()
    return Reply(204)


def _app_control(r: Req, action: str):
    fn = getattr(r.m.server, action, None)
    if fn is None:
        return Reply(501, {"error": "not_implemented",
                           "reason": f"this server cannot {action.replace('_', ' ')} (no Server.{action})"})
    if getattr(r.m, "resetting", False):
        return Reply(409, {"error": "conflict", "reason": "the node is being reset"})
    log.info("%s requested through the management API by user '%s'", action, r.user.name)
    r.m.run_soon(fn)
    return Reply(204)


@post("usagi/stop_app", ADMIN)
def usagi_stop_app(r: Req):
    return _app_control(r, "stop_app")


@post("usagi/start_app", ADMIN)
def usagi_start_app(r: Req):
    return _app_control(r, "start_app")


@get("usagi/cluster", MONITOR)
def usagi_cluster(r: Req):
    """The cluster as `usagictl cluster_status` shows it: nodes, their roles, the leader, its epoch,
    the in-sync set and each follower's replication lag (in batches). A single node reports itself."""
    c = r.broker.cluster
    if c is not None:
        return c.status()
    name = r.m.node
    return {"mode": "single", "cluster_name": r.broker.server_properties.get("cluster_name", name),
            "leader": name, "epoch": 0, "lsn": 0, "isr": [name], "min_in_sync": 1,
            "nodes": [{"name": name, "id": name, "role": "leader", "in_sync": True, "running": True,
                       "connected": True, "lag": 0}]}


@delete("usagi/cluster/nodes/:node", ADMIN)
async def usagi_forget_node(r: Req):
    """rabbitmqctl forget_cluster_node: remove a node that is not running from the cluster for
    good (its membership and its place in the ISR; its identity may not join again)."""
    c = r.broker.cluster
    if c is None:
        raise ApiError(409, "conflict", "this node is not a member of a cluster")
    refused = await c.forget(r.p("node"))
    if refused is not None:
        kind, name = refused
        if kind == "running":
            raise ApiError(409, "failed_to_remove_node", f"{{failed_to_remove_node,{name},{{active,"
                                                         f"\"Mnesia is running\",{name}}}}}")
        raise ApiError(404, "not_a_cluster_node", "The node selected is not in the cluster.")
    log.warning("node %s forgotten through the management API by user '%s'", r.p("node"), r.user.name)
    return Reply(204)


@post("usagi/cluster/step_down", ADMIN)
def usagi_step_down(r: Req):
    """Hand the cluster's leadership over to another in-sync node: this leader stops taking input,
    confirms what it took once the ISR has it, closes its clients' connections and resigns, then
    follows. 204 once the hand-over has started; 409 when no node could take over."""
    c = r.broker.cluster
    if c is None:
        raise ApiError(409, "conflict", "this node is not a member of a cluster")
    refused = c.step_down()
    if refused is not None:
        raise ApiError(409, "conflict", refused)
    log.warning("leadership hand-over requested through the management API by user '%s'", r.user.name)
    return Reply(204)


# ---------------------------------------------------------------------------------------- Usagi node settings
# What rabbitmqctl and rabbitmq-diagnostics do over Erlang distribution and RabbitMQ's management API
# cannot: usagictl and usagi-diagnostics use these (see nodectl.py).

@get("usagi/environment", ADMIN)
def usagi_environment(r: Req):
    """rabbitmqctl environment: the node's settings under RabbitMQ's names (and all of Usagi's)."""
    return nodectl.environment(r.m)


async def _reset(r: Req, what: str):
    if not getattr(r.m.server, "app_stopped", False):
        raise ApiError(409, "conflict", f"the node's AMQP side is running: stop it first (usagictl stop_app), "
                                        f"then {what}")
    if r.broker.cluster is not None:
        raise ApiError(409, "conflict", f"this node is a member of a cluster: {what} is not supported there")
    log.warning("%s requested through the management API by user '%s'", what, r.user.name)
    r.m.resetting = True
    try:
        await r.pacer.drain(r.broker.reset_steps())
        await r.m.durable()
        r.broker.reset_done()           # only once the end is durable: a crash before completes it at start
    finally:
        r.m.resetting = False
    return Reply(204)


@post("usagi/reset", ADMIN)
@one_at_a_time
async def usagi_reset(r: Req):
    """rabbitmqctl reset: with the AMQP side stopped, delete every vhost, queue, message, user,
    permission, policy and parameter, then create the default vhost and user again; answered once
    that is durable."""
    return await _reset(r, "reset")


@post("usagi/force_reset", ADMIN)
@one_at_a_time
async def usagi_force_reset(r: Req):
    """rabbitmqctl force_reset: as reset (a single node has no cluster to leave)."""
    return await _reset(r, "force_reset")


def _number(body: dict, key: str, lo: float, hi: float | None = None, integer: bool = False):
    v = body.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)) \
            or not math.isfinite(v) or v < lo or (hi is not None and v > hi):
        span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise bad_request(f"{key} must be {'an integer' if integer else 'a number'} {span}")
    return v


@put("usagi/vm_memory_high_watermark", ADMIN, accept=JSON_TYPE)
def usagi_set_memory_watermark(r: Req):
    """rabbitmqctl set_vm_memory_high_watermark: {"relative": 0.0..1.0} or {"absolute": bytes}.
    Not stored: a restart takes the configured one, as in RabbitMQ."""
    body = r.body()
    if "relative" in body:
        fraction = float(_number(body, "relative", 0.0, 1.0))
    elif "absolute" in body:
        total = nodectl.total_ram()
        if not total:
            raise bad_request("the node cannot tell its total memory: give a relative watermark")
        absolute = _number(body, "absolute", 1, 2 ** 63 - 1, integer=True)
        r.broker.set_memory_high_watermark(absolute=absolute)
        return Reply(204)
    else:
        raise bad_request("[{key_missing,relative}]")
    r.broker.set_memory_high_watermark(relative=fraction)
    return Reply(204)


@put("usagi/disk_free_limit", ADMIN, accept=JSON_TYPE)
def usagi_set_disk_free_limit(r: Req):
    """rabbitmqctl set_disk_free_limit: {"absolute": bytes} or {"mem_relative": fraction of RAM}.
    Not stored, as in RabbitMQ."""
    body = r.body()
    if "absolute" in body:
        r.broker.set_disk_free_limit(absolute=max(0, _number(body, "absolute", -2 ** 63, 2 ** 63, integer=True)))
    elif "mem_relative" in body:
        r.broker.set_disk_free_limit(relative=_number(body, "mem_relative", 0.0, 1000.0))
    else:
        raise bad_request("[{key_missing,absolute}]")
    return Reply(204)


@post("usagi/rotate_logs", ADMIN)
def usagi_rotate_logs(r: Req):
    """Rotate the node's log files; {"rotated": [paths]} (none when it logs to a stream only)."""
    files = nodectl.rotate_logs()
    log.info("log files rotated on request from user '%s': %s", r.user.name, ", ".join(files) or "none")
    return {"rotated": files}


@get("usagi/log_tail", ADMIN)
def usagi_log_tail(r: Req):
    """rabbitmq-diagnostics log_tail: the last `lines` lines (default 50) of the node's first log file:
    {"file": path or null, "lines": [...]}."""
    try:
        n = int(r.query.get("lines", "50"))
        if n < 0:
            raise ValueError
    except ValueError:
        raise bad_request("lines must be a non-negative integer") from None
    files = nodectl.log_files()
    if not files:
        return {"file": None, "lines": [], "locations": nodectl.log_locations()}
    try:
        lines = nodectl.tail(files[0], n)
    except OSError as e:
        raise ApiError(500, "internal_server_error", f"cannot read {files[0]}: {e.strerror}") from None
    return {"file": files[0], "lines": lines, "locations": nodectl.log_locations()}


@put("usagi/log_level", ADMIN, accept=JSON_TYPE)
def usagi_log_level(r: Req):
    """rabbitmqctl set_log_level: {"level": "debug" | "info" | "warning" | "error" | "critical" | "none"}."""
    level = r.body().get("level")
    if not isinstance(level, str) or level not in nodectl.LEVELS:
        raise bad_request(f"level {level} is not supported. Try one of {', '.join(nodectl.LEVELS)}")
    nodectl.set_log_level(level)
    log.info("log level set to %s on request from user '%s'", level, r.user.name)
    return Reply(204)


@get("usagi/queues/:vhost", VHOST)
def usagi_queue_pids(r: Req):
    """What rabbitmqctl list_queues shows of a queue and RabbitMQ's management API does not: its
    pid (nodectl.queue_pid) and its exclusive consumer's channel."""
    v = r.vhost()
    node, started = r.m.node, r.broker.started_at

    def render(q):
        excl = next((c for c in q.consumers if c.exclusive), None)
        return {"name": q.name, "vhost": q.vhost, "pid": nodectl.queue_pid(node, started, q),
                "exclusive_consumer_pid": r.view.channel_name(excl.channel) if excl is not None else ""}
    return Listing(_queues_of([v]), render=render, fields=BY_VHOST_AND_NAME, name=_name)
