"""Helpers shared by the test modules (processes, polling, FIFOs, OTLP, metrics, accounting).

Test modules and conftest files import from here; nothing here is a fixture or a test."""
