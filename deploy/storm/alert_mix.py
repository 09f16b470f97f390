"""The storm's alert mix: a seeded schedule of alert sends, as Alertmanager webhook (v4) bodies ready to post.

Services are spread over service groups (namespaces `storm-<run_id>-<system>`, fresh names for every run, so that
a run never merges into an earlier run's incidents). Each service has a fixed set of alerts (its "identities":
alertname plus a route, container, pool or mount point, with realistic labels: instance, pod, env, team, cluster,
job). A send is one of:

- `new`: a firing alert that is not firing yet (a new startsAt);
- `repeat`: a firing alert sent again unchanged (same startsAt: the same event id at the bridge);
- `resolve`: a firing alert resolved (endsAt set);
- `stray_resolve`: the resolve of an alert that is not firing (nobody knows it);
- `flap`: one alert alternating firing/resolved `flap_changes` times, a new startsAt each time it re-fires;
- `cascade`: a root service fires a burst of distinct alerts, then dependants in its group fire over the
  following moments (0.05 to 1 s later).

Proportions are shares of sends; a `new` in a group whose alerts are all firing becomes a resolve, a `repeat` or a
`resolve` with nothing firing becomes a new alert, so `AlertMix.sent_by_kind` is what was really sent.

Time is logical: every alert advances the clock by 1/nominal_rate s from `started_at_us`, so the mix (and every
timestamp, hence every event id) depends only on the config, the run id and the start. Each body holds alerts of
one group (as Alertmanager groups by namespace) and is assembled from prebuilt JSON fragments (orjson).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import random
import time
from dataclasses import dataclass, field
from typing import Literal

import orjson

SendKind = Literal["new", "repeat", "flap", "resolve", "stray_resolve", "cascade"]
SEND_KINDS: tuple[SendKind, ...] = ("new", "repeat", "flap", "resolve", "stray_resolve", "cascade")
Status = Literal["firing", "resolved"]

GO_ZERO_TIME = b"0001-01-01T00:00:00Z"  # Alertmanager's "no end" of a firing alert
SYSTEMS = ("shop", "payments", "search", "identity", "logistics", "media", "ads", "data", "messaging", "platform")
SERVICE_WORDS = (
    "gateway", "checkout", "cart", "orders", "inventory", "pricing", "billing", "ledger", "auth", "sessions",
    "users", "catalog", "recommend", "shipping", "notify", "email", "images", "upload", "reports", "scheduler",
    "worker", "cache", "db-proxy", "ratings", "reviews", "coupons", "tax", "fraud", "geo", "feeds",
)  # fmt: skip
ROUTES = ("/api/v1/orders", "/api/v1/cart", "/api/v1/users/{id}", "/api/v1/search", "/api/v2/items",
          "/api/v1/payments", "/graphql", "/api/v1/sessions")  # fmt: skip
# alertname, severity, the label that tells its variants apart, the variants (None: no such label).
ALERT_TEMPLATES: tuple[tuple[str, str, str | None, tuple[str, ...]], ...] = (
    ("ServiceDown", "critical", None, ("",)),
    ("HighErrorRate", "critical", "route", ("", "", "")),  # three of the service's routes
    ("HighLatency", "warning", "route", ("", "", "")),
    ("PodCrashLooping", "high", "container", ("app", "istio-proxy")),
    ("ConnectionPoolExhausted", "critical", "pool", ("primary", "replica")),
    ("DiskFull", "warning", "mountpoint", ("/data", "/var/log")),
    ("CPUThrottlingHigh", "info", "container", ("app",)),
)
_US = 1_000_000


@dataclass(frozen=True)
class MixProportions:
    """Shares of the sends by kind (normalised; defaults: a storm with plenty of noise)."""

    new: float = 0.35
    repeat: float = 0.25
    flap: float = 0.10
    resolve: float = 0.13
    stray_resolve: float = 0.02
    cascade: float = 0.15

    def __post_init__(self) -> None:
        shares = [self.new, self.repeat, self.flap, self.resolve, self.stray_resolve, self.cascade]
        if any(share < 0 for share in shares) or sum(shares) <= 0:
            raise ValueError("mix proportions must be >= 0 and not all 0")


@dataclass(frozen=True)
class MixConfig:
    services: int = 200
    groups: int = 20
    seed: int = 1
    run_id: str = "000000"
    proportions: MixProportions = field(default_factory=MixProportions)
    # Alerts per logical second: the spacing of startsAt/endsAt (the storm passes its target rate).
    nominal_rate: float = 20_000.0
    flap_changes: int = 6
    cascade_root_alerts: int = 3
    cascade_fanout: int = 4

    def __post_init__(self) -> None:
        if self.groups < 1 or self.services < self.groups:
            raise ValueError(f"need at least one service per group: {self.services} services, {self.groups} groups")
        if self.nominal_rate <= 0 or self.flap_changes < 2 or self.cascade_root_alerts < 1 or self.cascade_fanout < 0:
            raise ValueError("nominal_rate > 0, flap_changes >= 2, cascade_root_alerts >= 1, cascade_fanout >= 0")


@dataclass(frozen=True, slots=True)
class AlertBatch:
    """One webhook body (alerts of one group) and, per alert in body order, the kind of send it is."""

    group: str
    body: bytes
    kinds: tuple[SendKind, ...]

    @property
    def size(self) -> int:
        return len(self.kinds)


@dataclass(slots=True)
class _Identity:
    """One alert of one service: its JSON object up to (not including) status and times."""

    fragment: bytes
    label_items: frozenset[tuple[str, str]]


class _IndexedSet:
    """A set of ints with O(1) add, discard and random choice."""

    __slots__ = ("_items", "_positions")

    def __init__(self) -> None:
        self._items: list[int] = []
        self._positions: dict[int, int] = {}

    def __contains__(self, item: int) -> bool:
        return item in self._positions

    def add(self, item: int) -> None:
        if item not in self._positions:
            self._positions[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: int) -> None:
        position = self._positions.pop(item, None)
        if position is None:
            return
        last = self._items.pop()
        if last != item:
            self._items[position] = last
            self._positions[last] = position

    def choice(self, rng: random.Random) -> int | None:
        return self._items[rng.randrange(len(self._items))] if self._items else None


@dataclass(slots=True)
class _Group:
    """A service group's alerts: which fire (and since when), which are free, which flap, what is queued."""

    namespace: str
    system: str
    head: bytes  # the body's fields that never change, as a JSON object without its closing brace
    services: list[list[int]]  # per service of the group, its identities (indices into AlertMix._identities)
    free: _IndexedSet = field(default_factory=_IndexedSet)  # neither firing nor flapping
    calm_firing: _IndexedSet = field(default_factory=_IndexedSet)  # firing, not flapping
    starts: dict[int, int] = field(default_factory=dict)  # firing identity -> startsAt (µs)
    flapping: dict[int, int] = field(default_factory=dict)  # identity -> flap sends still to come
    pending: list[tuple[int, int, int, Status, SendKind]] = field(default_factory=list)  # heap: due, seq, ...


class AlertMix:
    """Deterministic for a given config and start: `next_batch(limit)` returns the next body of up to `limit`."""

    def __init__(self, config: MixConfig, *, started_at_us: int) -> None:
        self.config = config
        self.sent_by_kind: dict[SendKind, int] = dict.fromkeys(SEND_KINDS, 0)
        self._rng = random.Random(config.seed)
        self._now_us = started_at_us
        self._step_us = max(1, round(_US / config.nominal_rate))
        self._seq = 0
        self._identities: list[_Identity] = []
        self._groups = self._build_groups()
        self._actions, self._cumulative = self._action_table()
        self._second = -1
        self._second_prefix = b""

    @property
    def namespaces(self) -> list[str]:
        return [group.namespace for group in self._groups]

    def next_batch(self, limit: int) -> AlertBatch:
        """The next body: `limit` alerts (at least one) of one group."""
        group = self._groups[self._rng.randrange(len(self._groups))]
        parts: list[bytes] = []
        kinds: list[SendKind] = []
        items: list[frozenset[tuple[str, str]]] = []
        any_firing = False
        while len(parts) < max(1, limit):
            self._now_us += self._step_us
            if group.pending and group.pending[0][0] <= self._now_us:
                _, _, identity, status, kind = heapq.heappop(group.pending)
            else:
                identity, status, kind = self._draw(group)
            alert = self._emit(group, identity, status, kind)
            if alert is None:
                continue
            parts.append(alert)
            kinds.append(kind)
            items.append(self._identities[identity].label_items)
            any_firing = any_firing or status == "firing"
            self.sent_by_kind[kind] += 1
        common = orjson.dumps(dict(frozenset.intersection(*items)), option=orjson.OPT_SORT_KEYS)
        body = b"".join((
            group.head, b',"status":"', b"firing" if any_firing else b"resolved", b'","commonLabels":', common,
            b',"alerts":[', b",".join(parts), b"]}",
        ))  # fmt: skip
        return AlertBatch(group=group.namespace, body=body, kinds=tuple(kinds))

    # ------------------------------------------------------------------ the schedule

    def _draw(self, group: _Group) -> tuple[int, Status, SendKind]:
        """Draw the next action; return its first send (flaps and cascades queue the rest)."""
        action = self._actions[bisect.bisect_right(self._cumulative, self._rng.random())]
        if action == "repeat" or action == "resolve":
            identity = group.calm_firing.choice(self._rng)
            if identity is None:
                return self._new(group)
            return (identity, "firing", "repeat") if action == "repeat" else (identity, "resolved", "resolve")
        if action == "stray_resolve":
            identity = group.free.choice(self._rng)
            return (identity, "resolved", "stray_resolve") if identity is not None else self._new(group)
        if action == "flap":
            identity = group.free.choice(self._rng)
            return self._flap(group, identity) if identity is not None else self._new(group)
        if action == "cascade":
            return self._cascade(group)
        return self._new(group)

    def _new(self, group: _Group) -> tuple[int, Status, SendKind]:
        identity = group.free.choice(self._rng)
        if identity is not None:
            return identity, "firing", "new"
        identity = group.calm_firing.choice(self._rng)
        if identity is not None:  # everything fires: free one up
            return identity, "resolved", "resolve"
        # Everything flaps (a tiny group): the resolve of one that is not firing right now, if any.
        identity = next((i for i in group.flapping if i not in group.starts), next(iter(group.flapping)))
        return identity, "resolved", "stray_resolve"

    def _flap(self, group: _Group, identity: int) -> tuple[int, Status, SendKind]:
        changes = self.config.flap_changes
        group.free.discard(identity)
        group.flapping[identity] = changes
        due = self._now_us
        for change in range(1, changes):
            due += self._rng.randrange(100_000, 500_000)
            self._queue(group, due, identity, "resolved" if change % 2 else "firing", "flap")
        return identity, "firing", "flap"

    def _cascade(self, group: _Group) -> tuple[int, Status, SendKind]:
        rng = self._rng
        root = rng.randrange(len(group.services))
        burst = rng.sample(group.services[root], min(self.config.cascade_root_alerts, len(group.services[root])))
        for identity in burst[1:]:
            self._queue(group, self._now_us, identity, "firing", "cascade")
        others = [index for index in range(len(group.services)) if index != root]
        for dependant in rng.sample(others, min(self.config.cascade_fanout, len(others))):
            identities = group.services[dependant]
            due = self._now_us + rng.randrange(50_000, 1_000_000)
            self._queue(group, due, identities[rng.randrange(len(identities))], "firing", "cascade")
        return burst[0], "firing", "cascade"

    def _queue(self, group: _Group, due_us: int, identity: int, status: Status, kind: SendKind) -> None:
        self._seq += 1
        heapq.heappush(group.pending, (due_us, self._seq, identity, status, kind))

    def _emit(self, group: _Group, identity: int, status: Status, kind: SendKind) -> bytes | None:
        """The alert's JSON, updating what fires; None for a cascade alert that meanwhile flaps (dropped)."""
        flapping = kind == "flap"
        if flapping:
            remaining = group.flapping.pop(identity) - 1
            if remaining:
                group.flapping[identity] = remaining
        elif identity in group.flapping:
            return None
        now = self._now_us
        if status == "firing":
            starts_us = group.starts.get(identity)
            if starts_us is None:
                starts_us = group.starts[identity] = now
            if not flapping:
                group.free.discard(identity)
                group.calm_firing.add(identity)
            ends = GO_ZERO_TIME
        else:
            starts_us = group.starts.pop(identity, None)
            if starts_us is None:  # a stray resolve: it "started" a while ago, as far as anyone can tell
                starts_us = now - self._rng.randrange(30, 600) * _US
            ends = self._timestamp(now)
            group.calm_firing.discard(identity)
            if identity not in group.flapping:
                group.free.add(identity)
        return b"".join((
            self._identities[identity].fragment, b',"status":"', status.encode(), b'","startsAt":"',
            self._timestamp(starts_us), b'","endsAt":"', ends, b'"}',
        ))  # fmt: skip

    def _timestamp(self, micros: int) -> bytes:
        second, fraction = divmod(micros, _US)
        if second != self._second:
            self._second = second
            self._second_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return b"%s.%06dZ" % (self._second_prefix, fraction)

    # ------------------------------------------------------------------ construction

    def _action_table(self) -> tuple[list[str], list[float]]:
        shares = self.config.proportions
        per_group = self.config.services / self.config.groups
        cascade_size = self.config.cascade_root_alerts + min(self.config.cascade_fanout, max(0.0, per_group - 1))
        weights = {
            "new": shares.new, "repeat": shares.repeat, "resolve": shares.resolve,
            "stray_resolve": shares.stray_resolve, "flap": shares.flap / self.config.flap_changes,
            "cascade": shares.cascade / cascade_size,
        }  # fmt: skip
        total = sum(weights.values())
        cumulative, running = [], 0.0
        for weight in weights.values():
            running += weight / total
            cumulative.append(running)
        cumulative[-1] = 1.0
        return list(weights), cumulative

    def _build_groups(self) -> list[_Group]:
        config, rng = self.config, self._rng
        groups: list[_Group] = []
        for index in range(config.groups):
            rounds, word = divmod(index, len(SYSTEMS))
            system = SYSTEMS[word] if rounds == 0 else f"{SYSTEMS[word]}-{rounds + 1}"
            namespace = f"storm-{config.run_id}-{system}"
            head = orjson.dumps({
                "version": "4", "receiver": "opswarm-storm", "groupKey": f'{{}}:{{namespace="{namespace}"}}',
                "groupLabels": {"namespace": namespace}, "commonAnnotations": {},
                "externalURL": "http://alertmanager.storm.local:9093", "truncatedAlerts": 0,
            })[:-1]  # fmt: skip
            groups.append(_Group(namespace=namespace, system=system, head=head, services=[]))
        for number in range(config.services):
            group_index = number % config.groups
            group = groups[group_index]
            rounds, word = divmod(number // config.groups, len(SERVICE_WORDS))
            service = SERVICE_WORDS[word] if rounds == 0 else f"{SERVICE_WORDS[word]}-{rounds + 1}"
            identities = self._service_identities(number, service, group, group_index, rng)
            group.services.append(identities)
            for identity in identities:
                group.free.add(identity)
        return groups

    def _service_identities(
        self, number: int, service: str, group: _Group, group_index: int, rng: random.Random
    ) -> list[int]:
        namespace, system = group.namespace, group.system
        routes = rng.sample(ROUTES, 3)
        pod = f"{service}-{rng.getrandbits(40):010x}-{rng.getrandbits(20):05x}"
        instance = f"10.{group_index % 256}.{number // 256 % 256}.{number % 256}:8080"
        indices = []
        for alertname, severity, variant_label, variants in ALERT_TEMPLATES:
            for variant_index, variant in enumerate(variants):
                labels = {
                    "alertname": alertname, "service": service, "namespace": namespace, "severity": severity,
                    "env": "prod", "team": system, "cluster": "prod-eu-1", "job": "kubernetes-pods",
                    "instance": instance, "pod": pod,
                }  # fmt: skip
                if variant_label is not None:
                    labels[variant_label] = routes[variant_index] if variant_label == "route" else variant
                canonical = "\x1f".join(f"{key}\x1e{labels[key]}" for key in sorted(labels))
                alert = {
                    "labels": labels,
                    "annotations": {
                        "summary": f"{alertname} on {service} ({namespace})",
                        "description": f"{alertname} for {service}: {labels.get(variant_label or '', 'all')}",
                        "runbook_url": f"https://runbooks.example.com/{alertname.lower()}",
                    },
                    "generatorURL": f"http://prometheus.{system}.svc:9090/graph?g0.expr={alertname}",
                    "fingerprint": hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest(),
                }
                indices.append(len(self._identities))
                self._identities.append(
                    _Identity(fragment=orjson.dumps(alert)[:-1], label_items=frozenset(labels.items()))
                )
        return indices
