"""Extractors: what turns a source's payload into an endpoint's metrics and attributes."""
