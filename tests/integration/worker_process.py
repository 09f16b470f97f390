"""Runs tests/integration/bus_worker.py as a real process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from bus.config import KafkaConfig

REPO = Path(__file__).resolve().parents[2]


class WorkerProcess:
    def __init__(
        self, *, config: KafkaConfig, topic: str, group: str, delivery: str, markers: Path, **flags: str
    ) -> None:
        self.markers = markers
        argv = [
            sys.executable, "-m", "tests.integration.bus_worker", "--bootstrap", config.bootstrap_servers,
            "--topic-namespace", config.topic_namespace, "--topic", topic,
            "--group", group, "--delivery", delivery, "--markers", str(markers),
        ]  # fmt: skip
        for name, value in flags.items():
            argv += [f"--{name.replace('_', '-')}", value]
        self.log = markers.parent / f"{markers.name}.log"
        self._log_file = self.log.open("ab")
        self.process = subprocess.Popen(argv, cwd=REPO, stdout=self._log_file, stderr=subprocess.STDOUT)

    def kill_hard(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log_file.close()

    async def terminate(self, timeout_s: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await self.wait(timeout_s)

    async def wait(self, timeout_s: float = 30.0) -> int:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.process.poll() is None:
            if asyncio.get_running_loop().time() > deadline:
                self.process.kill()
                raise AssertionError(f"worker did not exit within {timeout_s}s; log: {self.log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)
        self._log_file.close()
        return self.process.returncode
