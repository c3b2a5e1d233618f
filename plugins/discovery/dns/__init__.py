"""`dns-discovery`: one endpoint per address a host name resolves to."""

from plugins.discovery.dns.discovery import DnsDiscovery, DnsDiscoveryParameters

__all__ = ["DnsDiscovery", "DnsDiscoveryParameters"]
