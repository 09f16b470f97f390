"""The alert bridge: Alertmanager webhooks (and generic JSON alerts) in, AlertReceived on Kafka out.

It answers 2xx only once Kafka acknowledged every record, so the sender retries whatever was not taken.

- `settings`: BridgeSettings / BridgeConfig (`OPSWARM_BRIDGE__*`, `OPSWARM_KAFKA__*`).
- `alert_payloads`: the accepted bodies (pydantic), timestamps; `alert_events`: bodies to AlertReceived, with
  the label rules and the deterministic event ids.
- `intake`: token, content type, bounded body, JSON; `rejections`: the 4xx/5xx answers.
- `kafka_link`: the producer, started lazily and replaced after a failed publish.
- `app`: the FastAPI app and its metrics; `server`: uvicorn until SIGTERM/SIGINT; `__main__`: the process.
"""
