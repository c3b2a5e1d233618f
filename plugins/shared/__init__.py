"""Code the plugins share and the core never sees: Prometheus scanning, payload formats,
the HTTP transports and their TLS settings."""
