"""kombu's Redis transport, without its window for losing a message. The stock consumer takes a
message off the queue with ``BRPOP`` and writes it to its ``unacked`` hash in a second round
trip; a worker killed between the two has the message only in its dead socket, and nothing
ever redelivers it (celery/kombu#305). Here the consumer moves the message atomically to a list
of its own (``BLMOVE``), records it as unacknowledged as usual, then drops its copy. Each
consumer keeps an "alive" key with a TTL; the periodic restore of unacknowledged messages also
moves back to their queue the messages left in the lists of consumers that are gone. A message
caught by both safety nets runs twice: the delivered-task ledger and Celery's deduplication of
successful tasks absorb that.

Used for ``redis://`` brokers by ``celery_app.create_celery_app`` (``broker_transport``). A queue
is one list (no priority levels); a ``global_keyprefix`` or several consumed queues fall back to
the stock behaviour."""

# kombu's transport is untyped: calling into it is what this module does
# mypy: disable-error-code="no-untyped-call"

import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

PROCESSING_PREFIX = "_kombu.processing:"
ALIVE_PREFIX = "_kombu.consumer-alive:"
LISTS_KEY = "_kombu.processing-lists"  # the consumers' lists, for the recovery to find


class QoS(kombu_redis.QoS):
    def restore_visible(self, *args: Any, **kwargs: Any) -> Any:
        """Also: this consumer is alive; messages of consumers that are gone go back."""
        self.channel.recover_processing()
        return super().restore_visible(*args, **kwargs)


class Channel(kombu_redis.Channel):
    QoS = QoS
    # one list per queue (no priorities: this service publishes none), so that one atomic move
    # takes the next message
    priority_steps = [0]  # noqa: RUF012 - the base class declares it a list

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumer_id = uuid.uuid4().hex
        self._moving_from: str | None = None
        self._alive_key = ALIVE_PREFIX + self.consumer_id
        self._lists_known: set[str] = set()
        interval = self.connection.client.transport_options.get(
            "unacked_restore_interval", self.unacked_restore_interval
        )
        self._alive_seconds = int(max(self.visibility_timeout, 3 * max(interval, 1)))

    def processing_key(self, queue: str) -> str:
        return f"{PROCESSING_PREFIX}{self.consumer_id}:{queue}"

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        if len(keys) != 1 or self.global_keyprefix:
            self._moving_from = None
            return super()._brpop_start(timeout)  # type: ignore[no-any-return]
        queue = keys[0]
        self.mark_alive(queue)
        self._moving_from = queue
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        self.client.connection.send_command(
            "BLMOVE", queue, self.processing_key(queue), "RIGHT", "LEFT",
            self.brpop_timeout if timeout is None else timeout or 0,
        )  # fmt: skip
        return None

    def _brpop_read(self, **options: Any) -> bool:
        queue, self._moving_from = self._moving_from, None
        if queue is None:
            return super()._brpop_read(**options)  # type: ignore[no-any-return]
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not item:
                raise Empty()
            self._queue_cycle.rotate(queue)
            self.connection._deliver(loads(bytes_to_str(item)), queue)  # now in ``unacked``
            with self.conn_or_acquire() as client:
                client.lrem(self.processing_key(queue), 1, item)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def mark_alive(self, queue: str) -> None:
        """Once per queue: this consumer is alive, and its list is known (a set, not a scan of
        the whole database, is what the recovery reads)."""
        if queue in self._lists_known:
            return
        with self.conn_or_acquire() as client:
            client.set(self._alive_key, 1, ex=self._alive_seconds)
            client.sadd(LISTS_KEY, self.processing_key(queue))
        self._lists_known.add(queue)

    def recover_processing(self) -> None:
        """Renew this consumer's alive key; put back the messages of consumers that are gone
        (their alive key expired) at the front of their queues."""
        if self.global_keyprefix:
            return
        try:
            with self.conn_or_acquire() as client:
                client.set(self._alive_key, 1, ex=self._alive_seconds)
                for raw in client.smembers(LISTS_KEY):
                    key = bytes_to_str(raw)
                    consumer, _, queue = key.removeprefix(PROCESSING_PREFIX).partition(":")
                    if consumer == self.consumer_id or client.exists(ALIVE_PREFIX + consumer):
                        continue
                    while client.lmove(key, queue, "RIGHT", "RIGHT") is not None:
                        pass
                    client.srem(LISTS_KEY, key)
        except (ChannelError, *self.connection_errors):
            pass  # the next restore cycle tries again


class Transport(kombu_redis.Transport):
    Channel = Channel
