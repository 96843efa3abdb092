"""banger-catalog: Images and kernels from banger's catalog of tar+zstd bundles."""
