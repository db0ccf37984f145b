"""The operator console (``mintsoft-bridge console``): server-rendered pages to see the flow,
find an order, fix dead letters and replay from the archive. Its own listener, never the
receiver's.

Vendored: ``static/htmx.min.js`` is htmx 2.0.11 (Zero-Clause BSD, ``static/htmx.LICENSE``),
sha256 d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717.
"""
