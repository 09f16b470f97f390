"""A real Kubernetes control plane of a test's own, on loopback: etcd, kube-apiserver and kube-controller-manager.

The binaries are upstream's, built by `deploy/setup.sh` (steps etcd and kube) from the Go module proxy. There is
no scheduler and no kubelet: Deployments, ReplicaSets and their revisions are real, pods stay Pending.

Two users authenticate with bearer tokens: `admin` (group system:masters) and `nobody` (no role at all).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.services import free_tcp_port

_CONTROLLERS = "deployment,replicaset,garbagecollector,namespace"
_TOKENS = {"admin": "opswarm-admin-token", "nobody": "opswarm-nobody-token"}


@dataclass(frozen=True)
class KubeCluster:
    server: str
    ca_file: Path
    where: Path

    def kubeconfig(self, user: str = "admin") -> Path:
        """A kubeconfig file for `user` (admin or nobody)."""
        path = self.where / f"kubeconfig-{user}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "test", "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": user, "user": {"token": _TOKENS[user]}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path


@contextmanager
def kube_cluster(where: Path, tools_bin: Path, timeout_s: float = 60.0) -> Iterator[KubeCluster]:
    """A control plane whose API server answers /readyz and whose controller manager answers /healthz."""
    binaries = {name: tools_bin / f"opswarm-{name}" for name in ("etcd", "kube-apiserver", "kube-controller-manager")}
    missing = [str(path) for path in binaries.values() if not path.is_file()]
    assert not missing, f"{missing} missing: run deploy/setup.sh (its etcd and kube steps build them)"
    where.mkdir(parents=True, exist_ok=True)
    etcd_port, peer_port, api_port, kcm_port = (free_tcp_port() for _ in range(4))
    subprocess.run(["openssl", "genrsa", "-out", str(where / "sa.key"), "2048"], check=True, capture_output=True)
    groups = {"admin": ",system:masters", "nobody": ""}
    lines = [f"{token},{user},{user}{groups[user]}\n" for user, token in _TOKENS.items()]
    (where / "tokens.csv").write_text("".join(lines))
    cluster = KubeCluster(f"https://127.0.0.1:{api_port}", where / "certs" / "apiserver.crt", where)
    with ExitStack() as processes:
        etcd = f"http://127.0.0.1:{etcd_port}"
        processes.enter_context(_process(where / "etcd.log", [
            str(binaries["etcd"]), "--name", "test", "--data-dir", str(where / "etcd"),
            "--listen-client-urls", etcd, "--advertise-client-urls", etcd,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer_port}", "--initial-cluster-state", "new",
            "--unsafe-no-fsync", "--log-level", "warn",
        ]))  # fmt: skip
        _poll(lambda: b'"health":"true"' in _get(f"{etcd}/health"), "etcd /health", timeout_s)
        processes.enter_context(_process(where / "kube-apiserver.log", [
            str(binaries["kube-apiserver"]), "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            # The loopback address cannot be reconciled into the `kubernetes` Endpoints; nothing here needs it.
            "--endpoint-reconciler-type=none", f"--secure-port={api_port}", f"--cert-dir={where / 'certs'}",
            f"--etcd-servers={etcd}", "--service-cluster-ip-range=10.96.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={where / 'sa.key'}", f"--service-account-signing-key-file={where / 'sa.key'}",
            f"--token-auth-file={where / 'tokens.csv'}", "--authorization-mode=RBAC",
            # No service-account controller runs, so pods would be refused for a missing `default` account.
            "--disable-admission-plugins=ServiceAccount",
        ]))  # fmt: skip
        _poll(lambda: _get(f"{cluster.server}/readyz", cluster.ca_file) == b"ok", "kube-apiserver /readyz", timeout_s)
        processes.enter_context(_process(where / "kube-controller-manager.log", [
            str(binaries["kube-controller-manager"]), f"--kubeconfig={cluster.kubeconfig()}",
            f"--controllers={_CONTROLLERS}", "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}", f"--cert-dir={where / 'certs-kcm'}",
        ]))  # fmt: skip
        _poll(lambda: _get(f"https://127.0.0.1:{kcm_port}/healthz") == b"ok", "controller manager /healthz", timeout_s)
        yield cluster


@contextmanager
def _process(log_path: Path, argv: list[str]) -> Iterator[subprocess.Popen]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    assert process.returncode is not None


def _get(url: str, ca_file: Path | None = None) -> bytes:
    """The body of a GET (b"" when nothing answers yet); the API server's CA, or no verification for the rest."""
    context = None
    if url.startswith("https"):
        context = ssl.create_default_context(cafile=str(ca_file)) if ca_file and ca_file.exists() else None
        if context is None:
            context = ssl._create_unverified_context()  # noqa: S323 - the controller manager's self-signed health port
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {_TOKENS['admin']}"})
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:  # noqa: S310 - loopback
            return response.read()
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return b""


def _poll(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not ready within {timeout_s}s")
        time.sleep(0.1)
