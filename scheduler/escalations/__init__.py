"""Escalations to humans: policies (who hears about what, in which order, for how long), the channels that reach
them (Slack, signed webhooks, e-mail, PagerDuty) and the links they answer with. Coordination drives them on
durable timers; nothing here decides anything about an incident."""
