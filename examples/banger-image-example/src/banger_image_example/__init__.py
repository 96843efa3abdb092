"""banger-image-example: the ``dir:PATH`` image source, a directory tree as a banger image."""
