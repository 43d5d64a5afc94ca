"""Task backends: in-process run slots, and Celery (the API's publisher, the worker's runtime
and process hooks, the Redis queue reading). Each executes tasks and tells its recorder."""
