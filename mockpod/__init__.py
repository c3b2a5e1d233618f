"""A mock vLLM (or SGLang) pod for testing and benchmarking the data layer.

One process can host many pods, each on its own port, each serving ``/metrics`` in the
engine's real exposition format, ``/v1/models``, ``/health``, OpenAI-shaped completions that
move the queue and KV-cache gauges, and ``/control`` to pin those gauges from a test.

Entry points: :func:`mockpod.server.start_pods` (tests), :func:`mockpod.server.serve_forever`
and :mod:`mockpod.cli` (the ``mock-pod`` command).
"""
