"""Real Milvus servers on this machine, for tests and benchmarks: milvus-lite's gRPC server mode, and Milvus 2.3.5
standalone (PyPI `milvus`, in its own venv: scripts/setup-milvus.sh)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from ..serving.chat import free_port  # noqa: F401  (the project's one free-port helper; re-exported for tests)

ROOT = Path(__file__).resolve().parents[2]   # the repo root of a source checkout (for .venv-milvus)


def answers(port: int, timeout: float = 5) -> bool:
    from pymilvus import MilvusClient
    try:
        client = MilvusClient(uri=f'http://127.0.0.1:{port}', timeout=timeout)
        client.list_collections()
        client.close()
        return True
    except Exception:
        return False


def wait_until_answers(port: int, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:   # the port opens before gRPC answers: wait until a real call succeeds
        if proc.poll() is not None:
            raise RuntimeError(f'Milvus server exited with {proc.returncode} before answering on port {port}')
        with socket.socket() as s:
            if s.connect_ex(('127.0.0.1', port)) == 0 and answers(port):
                return
        time.sleep(0.5)
    raise RuntimeError(f'Milvus server did not answer on port {port} within {seconds:.0f} s')


def start_lite_server(data_dir: Path, port: int) -> subprocess.Popen:
    exe = Path(sys.executable).with_name('milvus-lite')
    proc = subprocess.Popen([str(exe), 'server', '--data-dir', str(data_dir), '--port', str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_answers(port, proc, 60)
    except RuntimeError:
        proc.kill()
        raise
    return proc


class LiteServer:
    """milvus-lite's gRPC server as a restartable service: ``restart()`` keeps its port and data."""

    def __init__(self, data_dir: Path, port: Optional[int] = None):
        self.data_dir, self.port = Path(data_dir), port or free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def uri(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    def start(self) -> 'LiteServer':
        self.proc = start_lite_server(self.data_dir, self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None

    def restart(self, down_seconds: float = 0.0) -> 'LiteServer':
        self.stop()
        time.sleep(down_seconds)
        return self.start()


def milvus_standalone_exe() -> Optional[Path]:
    """``milvus-server`` of Milvus 2.3.5: $LAZYLLM_COLPALI_MILVUS_SERVER, or .venv-milvus (scripts/setup-milvus.sh)."""
    for candidate in (os.environ.get('LAZYLLM_COLPALI_MILVUS_SERVER'), ROOT / '.venv-milvus' / 'bin' / 'milvus-server'):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    found = shutil.which('milvus-server')
    return Path(found) if found else None


ETCD_PEER_PORT = 2380   # Milvus 2.3.5's embedded etcd always listens here: one standalone per machine


def wait_for_etcd_peer_port(seconds: float) -> None:
    """Wait while another Milvus 2.3.5 on this machine (another test session's) holds the etcd peer port:
    starting beside it fails with "address already in use" and a panic."""
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(('127.0.0.1', ETCD_PEER_PORT)) != 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f'port {ETCD_PEER_PORT} is still taken after {seconds:.0f} s: another Milvus 2.3.5 '
                               f'standalone (its embedded etcd) runs on this machine')
        time.sleep(2)


class MilvusStandalone:
    """Milvus 2.3.5 standalone on its own ports. Its wrapper starts ``milvus run standalone`` as a child that
    ignores SIGTERM for ~40 s, so stop() kills that child by pid too."""

    def __init__(self, exe: Path, data_dir: Path):
        self.exe, self.data_dir = exe, data_dir
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.ports = {'--etcd-port': free_port(), '--proxy-port': self.port, '--proxy-internal-port': free_port(),
                      '--root-coord-port': free_port(), '--query-coord-port': free_port(),
                      '--query-node-port': free_port(), '--index-coord-port': free_port(),
                      '--index-node-port': free_port(), '--data-coord-port': free_port(),
                      '--data-node-port': free_port()}

    @property
    def uri(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    def restart(self, down_seconds: float = 0.0) -> 'MilvusStandalone':
        """kill -9 the server, wait, start it again on the same ports and data (what an operator's crash and
        restart look like to clients)."""
        self.stop()
        time.sleep(down_seconds)
        return self.start()

    def start(self) -> 'MilvusStandalone':
        wait_for_etcd_peer_port(900)
        args = [str(self.exe), '--data', str(self.data_dir)]
        for flag, port in self.ports.items():
            args += [flag, str(port)]
        self.log = open(self.data_dir.parent / f'milvus-{self.port}.log', 'ab')
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_answers(self.port, self.proc, 300)   # ~10 s on a quiet machine; minutes on a loaded one
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # the wrapper and its `milvus run standalone` child
        except ProcessLookupError:
            pass
        for pid in _children_named(self.data_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        self.proc = None
        self.log.close()


def _children_named(data_dir: Path):
    """pids of `milvus run standalone` processes working in ``data_dir`` (in case one left the group)."""
    out = []
    for proc in Path('/proc').iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / 'cmdline').read_bytes().split(b'\0')
        except OSError:
            continue
        if cmd and cmd[0].endswith(b'/milvus') and str(data_dir).encode() in cmd[0]:
            out.append(int(proc.name))
    return out
