"""Per-endpoint paths for local sources: `/run/pods/{name}.sock`, `/var/run/status/{name}.json`.

A template is checked when the configuration loads (unknown fields are a
config error, not a poll error on every tick). Rendering refuses values that
would move the path out of its directory: endpoint names come from discovery,
and a file-discovery list is not a trusted path component.
"""

from __future__ import annotations

import string
from typing import Final

from datalayer.model import EndpointSpec
from datalayer.plugin import ParameterError

FIELDS: Final = ("name", "namespace", "address", "port")


class TemplateError(ValueError):
    """An endpoint's identity cannot be put into the template safely."""


class EndpointTemplate:
    """A `str.format` template over an endpoint's `name`, `namespace`, `address` and `port`."""

    __slots__ = ("fields", "text")

    def __init__(self, text: str, parameter: str) -> None:
        """Validate `text`; `parameter` is its YAML name, for the error's path."""
        if not text:
            raise ParameterError(parameter, "must not be empty")
        used: set[str] = set()
        try:
            for _, field, spec, conversion in string.Formatter().parse(text):
                if field is None:
                    continue
                if field not in FIELDS:
                    raise ParameterError(
                        parameter,
                        f"unknown field {{{field}}} (known: {', '.join(FIELDS)})",
                    )
                if spec or conversion:
                    raise ParameterError(parameter, f"{{{field}}} takes no conversion or format")
                used.add(field)
        except ValueError as exc:  # unbalanced braces
            raise ParameterError(parameter, f"invalid template {text!r}: {exc}") from None
        self.text = text
        self.fields = frozenset(used)

    def render(self, endpoint: EndpointSpec) -> str:
        values = {
            "name": endpoint.name,
            "namespace": endpoint.namespace,
            "address": endpoint.address,
            "port": str(endpoint.port),
        }
        for field in self.fields:
            value = values[field]
            if "/" in value or "\0" in value or value in ("", ".", ".."):
                raise TemplateError(f"endpoint {field} {value!r} cannot be used in a path")
        return self.text.format_map(values)
