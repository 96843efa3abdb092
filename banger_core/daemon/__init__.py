"""bangerd: the daemon (``main``), its HTTP API (``app``)."""
