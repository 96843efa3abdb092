"""banger-bridge: Bridge + tap + NAT networking."""
