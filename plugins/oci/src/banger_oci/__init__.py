"""banger-oci: images from any OCI registry, flattened into a bootable ext4 root filesystem."""
