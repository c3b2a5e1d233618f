"""Data sources: what fetches (or receives) one payload per endpoint, one package each."""
