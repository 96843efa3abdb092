"""Privileged host operations (bridge, tap, nftables, forwarding): the daemon calls them through HostOps."""
