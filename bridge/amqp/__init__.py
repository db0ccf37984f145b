"""AMQP plumbing shared by every part: the broker link with failover, the topology as data,
and the confirmed publish path (hand-built frames on aiormq). Imports only the core."""
