"""The shared core: settings, logs, metrics and the message contract. Imports nothing else
of the bridge."""
