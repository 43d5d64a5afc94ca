"""Structured logs: structlog set-up (JSON lines or console, trace ids, masking), its
processors, the masking of personal data, and cheap ISO timestamps."""
