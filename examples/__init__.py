"""Apps that are not this service, adopting the ``observability`` package."""
