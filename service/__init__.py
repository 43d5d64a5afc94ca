"""The notification service: a FastAPI app whose background tasks are observable."""
