"""`lightkit serve`: an exported artifact behind an OpenAI-compatible HTTP API (lightkit.cli.serve.command)."""
