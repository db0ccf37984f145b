"""mintsoft-bridge: Mintsoft order webhooks into RabbitMQ, delivered without loss."""

from bridge.errors import PermanentError

__all__ = ["PermanentError", "__version__"]
__version__ = "0.1.0"
