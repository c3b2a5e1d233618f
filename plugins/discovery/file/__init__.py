"""`file-discovery`: endpoints listed in a YAML file, reloaded when it changes."""

from plugins.discovery.file.discovery import FileDiscovery, FileDiscoveryParameters

__all__ = ["FileDiscovery", "FileDiscoveryParameters"]
