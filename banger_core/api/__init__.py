"""The API's models: what crosses the daemon's socket, shared by the daemon and the SDK.

Every request body and every response is one of these types; the daemon builds
them, the SDK parses them back, and ``--json`` prints them. Nothing here
imports daemon code, so the CLI can load it cheaply.
"""
