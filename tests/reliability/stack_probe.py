"""What the reliability tests look at from outside the processes: who listens on which TCP port (/proc/net),
process RSS, and a hard kill or freeze of a server's whole process group (Triton's Python stubs included)."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    pid: int | None

    @property
    def loopback(self) -> bool:
        address = ipaddress.ip_address(self.address)
        mapped = getattr(address, "ipv4_mapped", None)  # gRPC binds ::ffff:127.0.0.1
        return (mapped or address).is_loopback


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(hex_address, 16)))
    words = struct.unpack("<4I", raw)
    return socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))


def _socket_owners() -> dict[str, int]:
    """socket inode → pid, for the processes this user may inspect."""
    owners: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owners[target[8:-1]] = int(proc.name)
        except OSError:
            continue
    return owners


def tcp_listeners() -> list[Listener]:
    """Every listening TCP socket on this machine, with its owner where known."""
    owners = _socket_owners()
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != LISTEN:
                continue
            address, port = fields[1].split(":")
            found.append(Listener(_address(address), int(port, 16), owners.get(fields[9])))
    return found


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(proc.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo.extend(children.get(current, ()))
    return found


def listener_pid(port: int) -> int:
    for listener in tcp_listeners():
        if listener.port == port and listener.pid is not None:
            return listener.pid
    raise LookupError(f"nothing of ours listens on port {port}")


def signal_group(port: int, sig: signal.Signals) -> int:
    """Send `sig` to the process group of the server listening on `port` (servers run in their own session,
    so the group is the server and its children); returns the group id."""
    group = os.getpgid(listener_pid(port))
    os.killpg(group, sig)
    return group


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
