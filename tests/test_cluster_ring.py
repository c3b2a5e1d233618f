"""Ownership (datalayer/cluster/ring.py) and the `cluster:` section, without processes."""

from __future__ import annotations

from collections import Counter

import pytest

from datalayer.cluster.ring import assign, capacity, place, ranked
from datalayer.config import ConfigError, load_config_text
from datalayer.registry import default_registry

MEMBERS = ["10.0.0.1:9002", "10.0.0.2:9002", "10.0.0.3:9002"]
NAMES = [f"pod-{i}" for i in range(300)]


def test_every_name_has_one_owner_and_shares_stay_under_the_cap() -> None:
    owners = assign(NAMES, MEMBERS)
    assert set(owners) == set(NAMES)
    shares = Counter(owners.values())
    cap = capacity(len(NAMES), len(MEMBERS))
    assert set(shares) == set(MEMBERS)
    assert max(shares.values()) <= cap
    assert min(shares.values()) >= len(NAMES) - 2 * cap


def test_the_answer_depends_only_on_the_names_and_members_not_their_order() -> None:
    assert assign(NAMES, MEMBERS) == assign(list(reversed(NAMES)), list(reversed(MEMBERS)))


def test_a_departure_moves_the_departed_share_and_a_return_restores_it() -> None:
    before = assign(NAMES, MEMBERS)
    after = assign(NAMES, MEMBERS[1:])
    assert all(after[n] != MEMBERS[0] for n in NAMES)
    stayed = [n for n in NAMES if before[n] != MEMBERS[0]]
    moved = [n for n in stayed if after[n] != before[n]]
    # Bounded loads move a few more than the departed share, never a reshuffle.
    assert len(moved) <= 0.1 * len(stayed), len(moved)
    assert assign(NAMES, MEMBERS) == before


def test_a_new_name_is_placed_on_its_first_choice_which_assign_mostly_agrees_with() -> None:
    owners = assign(NAMES, MEMBERS)
    assert all(place(n, MEMBERS) == ranked(n, MEMBERS)[0] for n in NAMES)
    agree = sum(place(n, MEMBERS) == owners[n] for n in NAMES)
    assert agree >= 0.8 * len(NAMES), agree


CONFIG = """\
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: file-discovery
  parameters: {{path: endpoints.yaml}}
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
cluster:
{cluster}
"""


def load(cluster: str):  # type: ignore[no-untyped-def]
    return load_config_text(CONFIG.format(cluster=cluster), default_registry(), file="c.yaml")


def test_cluster_section_loads() -> None:
    config = load("  peers: [a:9002, b:9002]\n  self: a:9002\n  grace: 3s")
    assert config.cluster is not None
    assert config.cluster.peers == ["a:9002", "b:9002"]
    assert config.cluster.self_address == "a:9002"
    assert config.cluster.grace == 3.0
    assert config.cluster.mode == "sharded"
    full = load("  mode: full")
    assert full.cluster is not None
    assert full.cluster.mode == "full"


@pytest.mark.parametrize(
    ("cluster", "path", "why"),
    [
        ("  peers: [a:1]\n  peersDNS: x:1", "cluster.peersDNS", "not both"),
        ("  mode: sharded", "cluster.peers", "needs `peers` or `peersDNS`"),
        ("  peers: [nohostport]", "cluster.peers[0]", "expected host:port"),
        ("  peersDNS: name", "cluster.peersDNS", "expected name:port"),
        ("  peers: [a:1]\n  grace: 0s", "cluster.grace", "positive"),
    ],
)
def test_cluster_section_errors_name_the_entry(cluster: str, path: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(cluster)
    assert info.value.path == path
    assert why in info.value.message
