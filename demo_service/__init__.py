"""The aiobs demo inference service: an ONNX image classifier behind FastAPI with dynamic
batching, instrumented with one line. Run it with ``python -m demo_service``."""
