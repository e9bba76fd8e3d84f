"""Long-running services: the CLI, workers, the janitor, the HTTP API, the demo."""
