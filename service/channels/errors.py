"""How a delivery attempt failed, by class (the ``error`` label of
``notification_delivery_errors_total``; a bounded set). Transient classes are retried by the
backend (``TransientError``); ``DeliveryRejected`` fails the task at once."""

from observability.tasks.retry import TransientError


class ConnectionFailed(TransientError):
    """The server could not be reached, or dropped the connection."""


class DeliveryTimedOut(TransientError):
    """No answer within ``NOTIFY_DELIVERY_TIMEOUT_SECONDS``."""


class ServerBusy(TransientError):
    """The server answered "not now": SMTP 4xx, HTTP 408, 425, 429 or 5xx."""


class DeliveryRejected(Exception):
    """The server refused the message for good: SMTP 5xx, any other HTTP 4xx."""
