"""banger-firecracker: Firecracker VMM backend, configured through its API socket."""
