"""EPP files that wire scheduler-side plugins into `dataLayer`: run what the data layer has.

Upstream's precise prefix-cache pipeline puts a scheduler plugin under the data layer:
`precise-prefix-cache-producer` (current) or `precise-prefix-cache-scorer` (older) as an
extractor of `endpoint-notification-source`, where it opens a ZMQ KV-events subscriber per
pod and keeps the block index. Here that index is the data layer's own (`kv-block-index`
fed by `kv-events-data-source`, queried by MatchPrefix), so such an entry becomes that pair,
with upstream's parameters mapped where they mean the same thing. What stays scheduler work
(scoring, tokenization, speculative entries, metrics switches) is named in the one
"ignored" warning, and any other scheduler plugin wired under a source is dropped there too.

This works on the raw document, before decoding, so the rest of the loader sees an
ordinary data-layer config.
"""

from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any, Final

#: Upstream types whose data-layer half is the KV-block index.
PREFIX_TYPES: Final = frozenset({"precise-prefix-cache-producer", "precise-prefix-cache-scorer"})
INDEX_TYPE: Final = "kv-block-index"
EVENTS_TYPE: Final = "kv-events-data-source"
#: Upstream parameters with a data-layer meaning: (path in upstream's parameters) -> ours.
_INDEX_PARAMS: Final = {
    ("tokenProcessorConfig", "blockSize"): "blockSize",
    ("tokenProcessorConfig", "hashSeed"): "hashSeed",
    ("indexerConfig", "kvBlockIndexConfig", "inMemoryConfig", "size"): "capacity",
}
_EVENTS_PARAMS: Final = {
    ("kvEventsConfig", "podDiscoveryConfig", "socketPort"): "port",
    ("kvEventsConfig", "topicFilter"): "topicFilter",
}


def _get(mapping: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _leaves(mapping: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(mapping, dict) or not mapping:
        return [prefix] if prefix else []
    return [leaf for key, value in mapping.items() for leaf in _leaves(value, (*prefix, key))]


def map_prefix_plugins(
    data: dict[str, Any], registry: Container[str]
) -> tuple[dict[str, Any], list[str], set[str]]:
    """`data` (a copy) with wired precise-prefix plugins turned into the data layer's index;
    the notes for the warning line (what each left to the scheduler); and the names of
    plugins to set aside (a source whose every extractor went elsewhere). Entries keep their
    places in `plugins`, so errors still name the original index."""
    section_key = "data" if "data" in data else "dataLayer"
    section = data.get(section_key)
    plugins = data.get("plugins")
    if not isinstance(section, dict) or not isinstance(plugins, list):
        return data, [], set()
    sources = section.get("sources")
    if not isinstance(sources, list):
        return data, [], set()
    data = copy.deepcopy(data)
    plugins, section = data["plugins"], data[section_key]
    sources = section["sources"]
    by_name = {str(p.get("name") or p.get("type")): p for p in plugins if isinstance(p, dict)}
    notes: list[str] = []
    mapped: list[str] = []
    can_map = INDEX_TYPE in registry and EVENTS_TYPE in registry
    for source in sources:
        if not isinstance(source, dict) or not isinstance(source.get("extractors"), list):
            continue
        kept = []
        for ref in source["extractors"]:
            name = ref.get("pluginRef") if isinstance(ref, dict) else None
            entry = by_name.get(str(name))
            kind = entry.get("type") if entry else None
            if entry and kind in PREFIX_TYPES and can_map and name not in mapped:
                mapped.append(str(name))
                notes.append(_map(entry, str(name), plugins))
            elif kind is not None and kind not in registry:
                notes.append(f"{name} ({kind}) wired under {source.get('pluginRef')}")
            else:
                kept.append(ref)
        source["extractors"] = kept
    for name in mapped:
        sources.append({"pluginRef": f"{name}-kv-events", "extractors": [{"pluginRef": name}]})
    emptied = [s for s in sources if isinstance(s, dict) and s.get("extractors") == []]
    set_aside: set[str] = set()
    for source in emptied:
        # Its only consumers run elsewhere now: nothing here would read its events.
        sources.remove(source)
        set_aside.add(str(source.get("pluginRef")))
    return data, notes, set_aside


def _map(entry: dict[str, Any], name: str, plugins: list[Any]) -> str:
    """Rewrite `entry` into kv-block-index, add its kv-events-data-source; the note."""
    params = entry.get("parameters") or {}
    index = {
        ours: v for path, ours in _INDEX_PARAMS.items() if (v := _get(params, path)) is not None
    }
    events = {
        ours: v for path, ours in _EVENTS_PARAMS.items() if (v := _get(params, path)) is not None
    }
    if "hashSeed" in index:
        index["hashSeed"] = str(index["hashSeed"])
    used = set(_INDEX_PARAMS) | set(_EVENTS_PARAMS)
    left = [".".join(p) for p in _leaves(params) if p not in used]
    original = entry.get("type")
    entry.clear()
    entry.update({"type": INDEX_TYPE, "name": name, "parameters": index})
    plugins.append({"type": EVENTS_TYPE, "name": f"{name}-kv-events", "parameters": events})
    mapped = ", ".join(f"{k}={v}" for k, v in {**index, **events}.items()) or "defaults"
    tail = (
        f"; left: scoring, tokenization, {', '.join(left)}"
        if left
        else "; left: scoring, tokenization"
    )
    return f"{name} ({original}) runs here as {INDEX_TYPE} + {EVENTS_TYPE} ({mapped}){tail}"
