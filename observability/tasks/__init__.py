"""Tasks from a request to their end: the envelope, the request's batch and the route that
admits it, one run's state, the recorder of every lifecycle event, the executors that call a
task inside a run, and the journal of recent tasks."""
