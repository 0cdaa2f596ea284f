"""Read MQTT topics into a Bytewax dataflow as :class:`~schemas.models.RawMessage` items.

A flow reading two topic layouts (it runs against a broker on
127.0.0.1:1883, as ``make up`` starts; nothing connects before it runs):

>>> import bytewax.operators as op
>>> from bytewax.connectors.stdio import StdOutSink
>>> from bytewax.dataflow import Dataflow
>>> from flows.decode import decode_many
>>> from schemas.config import DecodeConfig
>>> config = MqttSourceConfig(subscriptions=[
...     {"topic": "plant/{site}/{device}/{metric}", "format": "number"},
...     {"topic": "batch/{device}", "format": "array"},
... ])
>>> flow = Dataflow("mqtt_demo")
>>> raw = op.input("mqtt", flow, MqttSource(config))
>>> decoded = op.flat_map_batch("decode", raw, lambda batch: decode_many(batch, DecodeConfig()))
>>> op.output("out", decoded, StdOutSink())
>>> # python -m bytewax.run demo:flow -s 1
>>> # mosquitto_pub -q 1 -t plant/north/press-1/temperature -m 71.5

Two clients share the subscriptions, so the broker gives each message to
one of them:

>>> source = MqttSource(MqttSourceConfig(url="mqtt://broker.example", clients=2,
...     shared_group="plant", subscriptions=[{"topic": "plant/{device}/{metric}"}]))
>>> source.list_parts(), str(source.address)
(['0', '1'], 'broker.example:1883')

Each item is ``RawMessage(payload, source="mqtt", received_at, origin=<topic>,
defaults=<fields from the topic template and the subscription's defaults>,
fmt=<the subscription's format>)``; decoding, and dead letters carrying the
topic, are :func:`flows.decode.decode_payload`'s job.

**Partitions.** This is a ``FixedPartitionedSource``: partition ``i`` is one
MQTT connection with client id ``<client_id>-<i>`` (``clients`` of them,
spread over the workers by Bytewax). A DynamicSource would also give one
client per worker, but two things decide for fixed partitions: (1) Bytewax
calls a fixed partition's ``snapshot`` at the end of every epoch, and that is
what acknowledgements are aligned to (below); a DynamicSource learns nothing
about epochs; (2) a client id does not depend on how many workers run, so a
persistent session survives re-scaling the workers. The resume state is
``None``: the broker keeps the session, there is no offset to store. With
``clients > 1`` the subscriptions are shared (``$share/<group>/<filter>``) so
the broker gives each message to exactly one client; independent StreamForge
processes share the load the same way when they use the same group (and
different ``client_id``).

**Delivery.** QoS 1 messages are acknowledged (PUBACK, paho's
``manual_ack``) only once the flow is done with them:

* ``ack: epoch`` (default): messages taken during epoch *E* are acknowledged
  when the partition is next polled in epoch *E+1*. Bytewax polls an input
  in a new epoch only after every output of the dataflow has finished
  everything of the previous epochs (its probe; with recovery on, after the
  epoch's snapshots are written too). So a message is acknowledged only after
  every sink returned from ``write_batch`` for all readings it produced:
  **at-least-once across a crash of StreamForge** (kill -9 included) -- what
  was not acknowledged is redelivered by the broker from the persistent
  session. What remains: (a) duplicates after a crash (sinks are idempotent
  upserts; a redelivery after a mere reconnect is recognised and not handed
  over twice); (b) state held inside stateful steps (open rollup
  windows) is only as durable as Bytewax recovery makes it; (c) a sink that
  buffers past ``write_batch`` returning breaks the chain. Cost: messages stay
  unacknowledged for up to an epoch, and a broker that honours
  ``receive_maximum`` sends no more than that many meanwhile, so throughput
  per client <= receive_maximum / epoch length: run with a short epoch
  (``python -m bytewax.run ... -s 1``; Bytewax's default is 10 s).
* ``ack: batch``: the previous batch is acknowledged when the partition is
  polled again, i.e. once Bytewax has taken that batch into the dataflow. A
  crash loses what was taken but not yet written by the sinks (in one worker
  usually nothing, the batch runs to the sinks before the next poll; across
  workers, batches in flight between them).

QoS 0 messages are at most once by definition (lost in a disconnect or crash).
A message taken on one connection is not acknowledged on a later one (its
packet id may have been reused); the broker redelivers it instead.

**Backpressure.** paho's network thread puts messages into a bounded queue
(``queue_size``), ``next_batch`` drains it without blocking. When the queue
is full the network thread waits for room instead of dropping anything: the
socket is not read, TCP pushes back on the broker (counted in
``streamforge_mqtt_queue_full_total``, logged at most once a minute). MQTT 5's
``ReceiveMaximum`` (``receive_maximum`` <= ``queue_size``, sent on connect)
asks the broker to stop sending QoS 1 messages while that many are
unacknowledged, which would keep the queue from ever filling, so that paho's
thread never waits and keep-alives flow however slow the dataflow is.
Measured here: mosquitto 2.0.11 (Debian 12, what ``make up`` runs) keeps to
it only until acknowledgements flow -- each PUBACK of the oldest in-flight
message lets it send ``receive_maximum`` more (eclipse-mosquitto/mosquitto
#2301) -- so on that broker the bounded queue is what holds. (MQTT 3.1.1 has
no such field; the broker's ``max_inflight_messages`` plays its part, with
the same bug.) While the flow takes messages, the waits are short and PUBACKs
and pings go out between them; a flow stalled for longer than 1.5 x
``keepalive`` with a full queue is disconnected by the broker and reconnects
when it moves again: QoS 1 messages are redelivered, QoS 0 ones the broker
dropped are lost.

**Connection.** The source connects when the partition is built: a refused
connection (bad credentials, not authorised), a refused subscription or a
TLS failure raises :class:`MqttConnectError` at once; an unreachable broker
is retried until ``connect_timeout``. Afterwards paho reconnects with
exponential backoff (``reconnect_min_delay`` doubling up to
``reconnect_max_delay``) and the subscriptions are renewed on every
connection. Metrics (:mod:`connectors.runtime.metrics`, labels ``source`` and ``client``):
``streamforge_mqtt_messages_received_total``, ``..._messages_taken_total``,
``..._messages_acked_total``, ``..._acks_skipped_total``, ``..._queue_depth``,
``..._queue_full_total``, ``..._connected``, ``..._disconnects_total``,
``..._reconnects_total``. Every disconnect and reconnect is logged.
"""

from __future__ import annotations

from bytewax.inputs import FixedPartitionedSource

from connectors.mqtt.client import MqttConnectError, parse_broker_url
from connectors.mqtt.config import MqttSourceConfig
from connectors.mqtt.partition import (
    ACKED,
    ACKS_SKIPPED,
    CONNECTED,
    DISCONNECTS,
    QUEUE_DEPTH,
    QUEUE_FULL,
    RECEIVED,
    RECONNECTS,
    TAKEN,
    MqttPartition,
)
from schemas.models import RawMessage
from schemas.settings import Settings

__all__ = [
    "ACKED",
    "ACKS_SKIPPED",
    "CONNECTED",
    "DISCONNECTS",
    "QUEUE_DEPTH",
    "QUEUE_FULL",
    "RECEIVED",
    "RECONNECTS",
    "TAKEN",
    "MqttConnectError",
    "MqttPartition",
    "MqttSource",
]


class MqttSource(FixedPartitionedSource[RawMessage, None]):
    """MQTT subscriptions as a Bytewax source of ``RawMessage``; one partition per client.

    ``settings.mqtt_url`` is the broker when ``config.url`` is unset.
    """

    def __init__(self, config: MqttSourceConfig, settings: Settings | None = None) -> None:
        self.config = config
        self.address = parse_broker_url(config.url or (settings or Settings()).mqtt_url)

    def list_parts(self) -> list[str]:
        """Keys ``"0"`` .. ``clients - 1``; every worker lists all and Bytewax spreads them."""
        return [str(i) for i in range(self.config.clients)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> MqttPartition:
        """Connect client ``<client_id>-<for_part>`` and subscribe."""
        return MqttPartition(self.config, self.address, f"{self.config.client_id}-{for_part}")
