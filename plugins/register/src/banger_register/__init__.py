"""banger-register: adopt an ext4 file already on the host as a banger image."""
