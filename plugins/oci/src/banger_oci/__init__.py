"""banger-oci: pulls OCI/Docker images from any registry and turns them into banger images."""
