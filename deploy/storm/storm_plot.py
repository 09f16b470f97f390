"""The storm's PNG: throughput (alerts sent and accounted per second) above latency (p50 and p99 per second).

matplotlib with the Agg backend (no display); the figure is built with the object API (no pyplot state), so it is
safe to draw from a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deploy.storm.accounting import SecondStats

log = logging.getLogger(__name__)


def draw_storm_plot(series: Sequence[SecondStats], path: Path, title: str) -> Path:
    """Draw the series into `path` (its directory is created); returns the path."""
    seconds = [stat.second for stat in series]
    edges = [*seconds, seconds[-1] + 1] if seconds else [0]
    figure = Figure(figsize=(10, 6.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    throughput, latency = figure.subplots(2, 1, sharex=True)
    throughput.stairs([stat.sent for stat in series], edges, label="sent/s", color="tab:blue", linewidth=1.5)
    throughput.stairs([stat.accounted for stat in series], edges, label="accounted/s", color="tab:green",
                      linewidth=1.5)  # fmt: skip
    throughput.set_ylabel("alerts per second")
    throughput.set_title(title)
    throughput.grid(alpha=0.3)
    throughput.legend(loc="upper right")
    for name, values, color in (("p50", [s.p50_ms for s in series], "tab:purple"),
                                ("p99", [s.p99_ms for s in series], "tab:red")):  # fmt: skip
        # A second's latencies are those of the alerts accounted during it: drawn at its middle.
        measured = [(second + 0.5, value) for second, value in zip(seconds, values, strict=True) if value is not None]
        latency.plot([m[0] for m in measured], [m[1] for m in measured], marker=".", label=f"{name} latency",
                     color=color)  # fmt: skip
    latency.set_ylabel("alert sent → outcome observed (ms)")
    latency.set_xlabel("seconds since the storm started")
    latency.grid(alpha=0.3)
    latency.legend(loc="upper right")
    if not any(s.p99_ms is not None for s in series):
        latency.text(0.5, 0.5, "no alert accounted", transform=latency.transAxes, ha="center", va="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    log.info("storm plot written", extra={"path": str(path), "seconds": len(series)})
    return path
