"""banger-qemu: QEMU VMM backend (microvm; KVM when it works, TCG otherwise)."""
