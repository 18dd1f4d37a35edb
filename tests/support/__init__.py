"""Test support: a real OTLP/HTTP receiver, server processes, the sample app."""

BOOM_MESSAGE = "internal detail: db password at /srv/secret-path"
"""What the sample app's failing route raises with: it must never reach a response."""
