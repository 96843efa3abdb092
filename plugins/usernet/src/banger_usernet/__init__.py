"""banger-usernet: QEMU user-mode networking: rootless, ssh forwarded on 127.0.0.1."""
