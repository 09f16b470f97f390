"""The event bus: event contracts, the topic registry and the Kafka runtime every agent stands on.

`bus` imports no other opswarm package.
"""
