"""Vhosts, users and permissions: the definitions an administrator changes, written to the store.
(The checks that use permissions are in access.py.)

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging

from ..amqp import errors as E
from ..model.vhost import VHost


log = logging.getLogger("usagi.broker")


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
        v = self.vhosts.get(name)
        if v is None:
            return False
        for conn in list(self.connections):
            if conn.vhost == name:
                conn.force_close(E.CONNECTION_FORCED, f"vhost '{name}' is deleted")
        for q in list(v.queues.values()):
            self.delete_queue(q)
        for x in list(v.exchanges.values()):
            if x.durable and x.name:
                self.store.delete_definition("exchange", (name, x.name))
        for key in [k for k in self.users.permissions if k[1] == name]:
            self.users.permissions.pop(key)
            self.store.delete_definition("permission", key)
        for key in [k for k in self.policies if k[0] == name]:
            self.policies.pop(key)
            self.store.delete_definition("policy", key)
        del self.vhosts[name]
        self.store.delete_definition("vhost", (name,))
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
        perms = [k for k in self.users.permissions if k[0] == name]
        if not self.users.delete_user(name):
            return False
        self.store.delete_definition("user", (name,))
        for k in perms:
            self.store.delete_definition("permission", k)
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
