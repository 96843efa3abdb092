"""banger's core: plugin manager, config, state, daemon, client and CLI.

Kept import-free so that ``banger --version`` stays fast.
"""
