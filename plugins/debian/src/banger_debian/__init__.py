"""banger-debian: Debian cloud kernel plus banger's initramfs."""
