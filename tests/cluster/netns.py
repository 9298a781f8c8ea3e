"""Network partitions for the cluster tests: one network namespace per process, nftables to cut links.

Each etcd member and each Usagi node of a `Net` runs in a namespace of its own, joined to the
others by a veth pair into one bridge in the tests' namespace, which has the subnet's last
address: the tests (clients, the checker, the harness's etcd reads) reach every process through
it, as clients reach a real cluster over its network. A partition is a set of nftables rules in
the namespaces concerned that drop, silently (no reset, no ICMP: as a cable pulled or a switch
dropping), every packet between given addresses; healing deletes them. Processes keep running
through it, which is what makes a partition differ from a crash.

Needs root, `ip` (iproute2) and `nft` (Debian's nftables); `need_netns()` skips with the reason
otherwise. Interface and namespace names carry a random tag, so parallel test runs never meet.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest

IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"


def _run(*cmd, check=True):
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r


def netns_missing() -> str | None:
    """Why partitions cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not os.path.exists(IP):
        return "iproute2's ip is not installed"
    if not os.path.exists(NFT):
        return "nft is not installed (Debian package nftables; .ci/run installs it)"
    tag = "p%04x" % random.randrange(1 << 16)
    r = _run(IP, "netns", "add", tag, check=False)
    if r.returncode != 0:
        return f"cannot make a network namespace: {r.stderr.strip()}"
    _run(IP, "netns", "del", tag, check=False)
    return None


def need_netns():
    why = netns_missing()
    if why:
        pytest.skip(why)


class Net:
    """A bridge and a namespace per member; `cut` and `heal` make and end partitions."""

    def __init__(self):
        self.tag = "%04x" % random.randrange(1 << 16)
        a, b = random.randrange(16, 250), random.randrange(1, 250)
        self.prefix = f"10.{a}.{b}."
        self.gateway = self.prefix + "254"
        self.bridge = f"ub{self.tag}"
        self.spaces: dict[str, str] = {}       # address -> namespace
        _run(IP, "link", "add", self.bridge, "type", "bridge")
        _run(IP, "addr", "add", self.gateway + "/24", "dev", self.bridge)
        _run(IP, "link", "set", self.bridge, "up")

    def add(self, short: str, last_octet: int) -> str:
        """A namespace for one process (`short`: a few letters, as n1 or e2); returns its address."""
        ns = f"u{self.tag}{short}"
        addr = self.prefix + str(last_octet)
        host_end, ns_end = f"u{self.tag}{short}h", f"u{self.tag}{short}c"
        _run(IP, "netns", "add", ns)
        _run(IP, "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _run(IP, "link", "set", host_end, "master", self.bridge)
        _run(IP, "link", "set", host_end, "up")
        _run(IP, "link", "set", ns_end, "netns", ns)
        _run(IP, "-n", ns, "addr", "add", addr + "/24", "dev", ns_end)
        _run(IP, "-n", ns, "link", "set", ns_end, "up")
        _run(IP, "-n", ns, "link", "set", "lo", "up")
        # the table partitions go into: empty until a cut
        self._nft(ns, "add table inet usagi_part")
        self._nft(ns, "add chain inet usagi_part in { type filter hook input priority 0 ; }")
        self._nft(ns, "add chain inet usagi_part out { type filter hook output priority 0 ; }")
        self.spaces[addr] = ns
        return addr

    def prefix_cmd(self, addr: str) -> list[str]:
        """The command prefix that runs a process in the namespace of `addr`."""
        return [IP, "netns", "exec", self.spaces[addr]]

    def _nft(self, ns: str, rule: str):
        _run(IP, "netns", "exec", ns, NFT, rule)

    def cut(self, addr: str, peers):
        """Drop, silently, every packet between `addr` and each of `peers` (addresses; the
        gateway stands for the clients and the tests)."""
        ns = self.spaces[addr]
        peers = ", ".join(peers)
        # one nft run, one transaction: the cut takes effect at once, in both directions
        script = (f"add rule inet usagi_part in ip saddr {{ {peers} }} drop\n"
                  f"add rule inet usagi_part out ip daddr {{ {peers} }} drop\n")
        r = subprocess.run([IP, "netns", "exec", ns, NFT, "-f", "-"], input=script, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"nft in {ns}: {r.stderr.strip()}")

    def heal(self, addr: str | None = None):
        """End every cut of `addr` (of all members without one)."""
        for a, ns in self.spaces.items():
            if addr is None or a == addr:
                self._nft(ns, "flush table inet usagi_part")

    def close(self):
        for ns in self.spaces.values():
            # processes left in a namespace would keep it (and its addresses) alive
            r = _run(IP, "netns", "pids", ns, check=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass
            _run(IP, "netns", "del", ns, check=False)
        _run(IP, "link", "del", self.bridge, check=False)
        self.spaces = {}
