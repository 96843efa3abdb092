"""The host side of the guest agent (``banger-agent``): transports and :class:`AgentClient`."""
