"""The HTTP side of the runtime: the ASGI middleware, its endpoints, health and routes."""
