"""`opswarm storm`: a load generator of realistic alert storms, with end-to-end latency and a full account.

- `alert_mix`: the seeded mix of alerts (services over groups, repeats, flaps, resolves, cascades) as
  Alertmanager webhook bodies.
- `senders`: the bridge (HTTP) and Kafka (EventPublisher) ways in.
- `observer`: reads monitoring's AlertsTriaged records from the triage topic.
- `accounting`: every alert sent is opened, merged, duplicate or suppressed; what is missing is lost.
- `storm_run`: paced, closed-loop sending and the drain; `storm_plot`: the PNG.
"""
