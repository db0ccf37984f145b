"""The webhook archive: the stream ``<exchange>.archive`` that keeps every published
webhook for its retention, and the library that finds, replays and describes them
(``window``, ``end``, ``reader``, ``replay``, ``status``). Imports core and amqp only."""
