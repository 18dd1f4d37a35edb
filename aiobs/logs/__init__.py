"""JSON logs: the structlog pipeline and the buffered sink it writes through."""
