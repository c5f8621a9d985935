"""The server: lifecycle, connections, request handlers and task dispatch."""
