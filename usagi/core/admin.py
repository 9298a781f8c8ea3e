"""Vhosts, users and permissions: the definitions an administrator changes, written to the store.
(The checks that use permissions are in access.py.)

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging
import os

from ..amqp import errors as E
from ..model.vhost import VHost


log = logging.getLogger("usagi.broker")

RESET_MARKER = "reset.pending"      # in the data dir while a reset is under way (see reset_steps)


def _fsync_dir(path: str):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AdminMixin:
    # ------------------------------------------------------------------ vhosts, users, permissions
    def add_vhost(self, name: str, description: str = "", tags=None, default_queue_type="classic") -> VHost:
        v = self.vhosts.get(name)
        if v is not None:
            return v
        v = self.vhosts[name] = VHost(name, description, tags, default_queue_type)
        self.store.put_definition("vhost", (name,), {"name": name, **v.metadata()})
        log.info("vhost '%s' added", name)
        return v

    def delete_vhost(self, name: str) -> bool:
        """Delete a vhost and everything scoped to it, in memory and in the store: a vhost
        re-created under the same name starts clean."""
        v = self.vhosts.get(name)
        if v is None:
            return False
        for conn in list(self.connections):
            if conn.vhost == name:
                conn.force_close(E.CONNECTION_FORCED, f"vhost '{name}' is deleted")
        for q in list(v.queues.values()):
            self.delete_queue(q)
        store = self.store
        for x in list(v.exchanges.values()):
            for b in list(x.bindings.values()):       # those to exchanges: the queues are gone
                if x.durable and b.destination.durable:
                    store.delete_definition("binding", self.binding_key(v, b))
            if x.durable and x.name:
                store.delete_definition("exchange", (name, x.name))
            x.deleted = True
        v.exchanges.clear()
        for key in [k for k in self.users.permissions if k[1] == name]:
            self.users.permissions.pop(key)
            store.delete_definition("permission", key)
        for key in [k for k in self.users.topic_permissions if k[1] == name]:
            self.users.topic_permissions.pop(key)
            store.delete_definition("topic_permission", key)
        for table, kind in ((self.policies, "policy"), (self.operator_policies, "operator_policy")):
            for key in [k for k in table if k[0] == name]:
                table.pop(key)
                store.delete_definition(kind, key)
        for key in [k for k in self.parameters if k[0] == name]:      # vhost limits among them
            self.parameters.pop(key)
            store.delete_definition("parameter", key)
        v.limits.clear()
        self.delayed.drop_vhost(name)
        del self.vhosts[name]
        store.delete_definition("vhost", (name,))
        log.info("vhost '%s' deleted", name)
        return True

    def add_user(self, name, password=None, tags=None, password_hash=None, hashing_algorithm=None):
        kw = {}
        if hashing_algorithm:
            kw["hashing_algorithm"] = hashing_algorithm
        u = self.users.add_user(name, password, tags, password_hash=password_hash, **kw)
        self.save_user(u)
        return u

    def save_user(self, u):
        self.store.put_definition("user", (u.name,), {
            "name": u.name, "password_hash": u.password_hash, "hashing_algorithm": u.hashing_algorithm,
            "tags": list(u.tags), "limits": dict(u.limits)})

    def delete_user(self, name: str) -> bool:
        """Delete a user with its permissions and topic permissions, in memory and in the store."""
        perms = [k for k in self.users.permissions if k[0] == name]
        if not self.users.delete_user(name):
            return False
        self.store.delete_definition("user", (name,))
        for k in perms:
            self.users.permissions.pop(k, None)
            self.store.delete_definition("permission", k)
        for k in [k for k in self.users.topic_permissions if k[0] == name]:
            del self.users.topic_permissions[k]
            self.store.delete_definition("topic_permission", k)
        for conn in list(self.connections):
            if conn.user is not None and conn.user.name == name:
                conn.force_close(E.CONNECTION_FORCED, f"user '{name}' is deleted")
        return True

    def set_permissions(self, user, vhost, configure, write, read):
        p = self.users.set_permission(user, vhost, configure, write, read)
        self.store.put_definition("permission", (user, vhost), {
            "user": user, "vhost": vhost, "configure": configure, "write": write, "read": read})
        return p

    def clear_permissions(self, user, vhost) -> bool:
        if self.users.clear_permission(user, vhost):
            self.store.delete_definition("permission", (user, vhost))
            return True
        return False

    def set_topic_permission(self, user: str, vhost: str, exchange: str, write: str, read: str) -> bool:
        """Set a user's topic permission on one exchange of a vhost (stored). True if new."""
        key = (user, vhost, exchange)
        created = key not in self.users.topic_permissions
        p = {"user": user, "vhost": vhost, "exchange": exchange, "write": write, "read": read}
        self.users.topic_permissions[key] = p
        self.store.put_definition("topic_permission", key, p)
        return created

    def clear_topic_permissions(self, user: str, vhost: str, exchange: str | None = None) -> int:
        """Remove a user's topic permissions in a vhost (on one exchange, or all). How many went."""
        tp = self.users.topic_permissions
        keys = [k for k in tp if k[0] == user and k[1] == vhost and (exchange is None or k[2] == exchange)]
        for k in keys:
            del tp[k]
            self.store.delete_definition("topic_permission", k)
        return len(keys)

    # ------------------------------------------------------------------ global parameters
    def set_global_parameter(self, name: str, value) -> bool:
        """Set a global runtime parameter (stored); cluster_name also renames the cluster."""
        created = name not in self.global_parameters
        self.global_parameters[name] = value
        self.store.put_definition("global_parameter", (name,), {"name": name, "value": value})
        if name == "cluster_name" and isinstance(value, str):
            self.server_properties["cluster_name"] = value
        return created

    def clear_global_parameter(self, name: str) -> bool:
        if name not in self.global_parameters:
            return False
        del self.global_parameters[name]
        self.store.delete_definition("global_parameter", (name,))
        if name == "cluster_name":
            self.server_properties["cluster_name"] = self.config.node_name
        return True

    # ------------------------------------------------------------------ reset
    def _reset_marker(self) -> str | None:
        d = getattr(self.store, "data_dir", None)
        return os.path.join(d, RESET_MARKER) if d else None

    def _reset_marker_write(self):
        path = self._reset_marker()
        if path is None or os.path.exists(path):
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"a reset of this node is under way; the next start completes it\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(os.path.dirname(path))

    def reset_done(self):
        """A reset's end is durable: the marker goes (see reset_steps)."""
        path = self._reset_marker()
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                return
            _fsync_dir(os.path.dirname(path))

    def resume_reset(self) -> bool:
        """At start, before serving: complete a reset a crash interrupted (True if there was one)."""
        path = self._reset_marker()
        if path is None or not os.path.exists(path):
            return False
        log.warning("a reset of this node was interrupted (%s exists): completing it", path)
        for _ in self.reset_steps():
            pass
        self.store.commit()
        self.reset_done()
        return True

    def reset_steps(self):
        """Return the node to its virgin state (rabbitmqctl reset, run with the AMQP side stopped):
        every vhost with its queues, messages, exchanges, bindings, policies and parameters, every
        user with its permissions and limits, every global parameter; then the default vhost and
        user, as at a first start. A generator of bounded steps (a queue, a vhost or a user each),
        for a caller that runs it a slice at a time; what it deletes goes to the store as it goes.

        So that a crash part way (the store has committed some deletions) does not leave a node
        half reset, a marker file in the data dir says a reset is under way from before the first
        deletion until the caller, once the end is durable, calls `reset_done()`; a start that
        finds the marker completes the reset before serving (see `resume_reset`)."""
        self._reset_marker_write()
        for name in list(self.vhosts):
            v = self.vhosts.get(name)
            if v is None:
                continue
            for q in list(v.queues.values()):
                if not q.deleted:
                    self.delete_queue(q, reason="node reset")
                yield
            self.delete_vhost(name)
            yield
        for name in list(self.users.users):
            self.delete_user(name)
            yield
        for name in list(self.global_parameters):
            self.clear_global_parameter(name)
        self.bootstrap()
        log.warning("node reset: all vhosts, users, queues and messages deleted; default vhost '%s' and "
                    "user '%s' created again", self.config.default_vhost, self.config.default_user)
