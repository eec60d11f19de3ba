"""Faithful local stand-ins for external services the tests cannot reach."""
