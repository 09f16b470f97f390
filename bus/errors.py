"""Errors a handler raises to tell the consumer loop what to do with a record."""


class RetriableError(Exception):
    """A transient failure: the loop backs off and retries the record, within its retry budget."""


class NonRetriableError(Exception):
    """A permanent failure for this record: the loop sends it to the dead-letter topic and moves on."""


class EventDecodeError(ValueError):
    """The bytes of a record are not a valid opswarm event (not JSON, unknown type, or schema-invalid)."""
