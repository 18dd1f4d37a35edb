"""The aiobs demo inference service."""
