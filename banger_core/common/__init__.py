"""Code both sides of the socket share: errors, names, paths, config, plugin manager, bundle format."""
