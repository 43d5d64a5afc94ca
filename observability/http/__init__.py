"""The HTTP side: the server span and ``http_server_*`` metrics of every request."""
