"""Helpers of the pub/sub (Hub) tests: a real redis-server process, chat server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..helpers import HOST, free_port

STARTUP_TIMEOUT = 15.0


def redis_ping(port: int) -> bool:
    """Whether a Redis server answers PING on ``port`` (raw RESP: no client library needed)."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` process that tests can stop and start again on the same port."""

    def __init__(
        self,
        executable: str,
        directory: Path,
        *,
        appendonly: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.executable = executable
        self.directory = directory
        self.extra = extra
        #: Persist every write before answering (AOF, fsync always): a restart loses nothing
        #: that was acknowledged.
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        command = [
            self.executable,
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            *(
                ["--appendonly", "yes", "--appendfsync", "always"]
                if self.appendonly
                else ["--appendonly", "no"]
            ),
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not redis_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start: {error.strip()}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()  # an outage, not a clean shutdown
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()

    def command(self, *args: str) -> bytes:
        """Send one command with raw RESP and return the raw reply (for assertions)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection((HOST, self.port), timeout=5.0) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536)

    def numsub(self, channel: str) -> int:
        """PUBSUB NUMSUB: how many Redis connections subscribe to ``channel``."""
        reply = self.command("PUBSUB", "NUMSUB", channel)
        # *2\r\n$len\r\nchannel\r\n:N\r\n
        return int(reply.rsplit(b":", 1)[1].strip())


class ChatProcess:
    """``python -m shakehands chat`` in a subprocess, on a free port."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shakehands", "chat", "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "Chat server on" not in line:
            self.stop()
            raise RuntimeError(f"chat server did not start: {line!r}")

    def uri(self, room: str, name: str = "") -> str:
        query = f"?name={name}" if name else ""
        return f"ws://{HOST}:{self.port}/{room}{query}"

    def kill(self) -> None:
        """A crash: SIGKILL, no goodbye to anyone."""
        self.process.kill()
        self.process.communicate(timeout=15)

    def stop(self) -> str:
        """Stop with SIGTERM; return what it logged on stderr."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err or ""


class LocalRedisCluster:
    """A real Redis Cluster on 127.0.0.1: ``masters`` primaries with one replica each, every
    node a ``redis-server --cluster-enabled yes`` process with AOF (fsync always), joined with
    ``redis-cli --cluster create ... --cluster-replicas 1``. ``node_timeout`` (ms) is short, so
    that a killed master's replica takes over within a few seconds."""

    def __init__(
        self, executable: str, cli: str, directory: Path, masters: int = 3, node_timeout: int = 1000
    ) -> None:
        self.cli = cli
        self.nodes = []
        for index in range(2 * masters):
            node_directory = directory / f"node{index}"
            node_directory.mkdir()
            extra = (
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_directory / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout),
                # The bus port is port + 10000 by default: past 65535 for high free ports.
                "--cluster-port", str(free_port()),
                "--cluster-replica-validity-factor", "0",
            )  # fmt: skip
            self.nodes.append(RedisServer(executable, node_directory, appendonly=True, extra=extra))

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        result = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {result.stdout}{result.stderr}")
        self.wait_ok()
        # cluster_state:ok does not wait for the replicas' first sync: a failover before it
        # would promote an empty replica.
        deadline = time.monotonic() + 60
        while True:
            infos = [node.command("INFO", "replication") for node in self.nodes]
            masters = [info for info in infos if b"role:master" in info]
            if len(masters) == len(self.nodes) // 2 and all(
                b"connected_slaves:1" in info and b"state=online" in info for info in masters
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replicas did not sync: {infos!r}")
            time.sleep(0.1)

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every live node says ``cluster_state:ok`` and knows all its peers agree."""
        deadline = time.monotonic() + timeout
        while True:
            states = [
                node.command("CLUSTER", "INFO") for node in self.nodes if node.process is not None
            ]
            if all(b"cluster_state:ok" in state for state in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not ok: {states!r}")
            time.sleep(0.1)

    def master_of(self, key: str) -> RedisServer:
        """The node that serves ``key``'s slot now."""
        for node in self.nodes:
            if node.process is None:
                continue
            if node.command("EXISTS", key).startswith(b":"):  # others answer -MOVED
                return node
        raise RuntimeError(f"no node serves {key!r}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
