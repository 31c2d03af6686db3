"""The service surface: the client, the Ray job entry point, status, the model registry and their CLI commands."""
