"""banger-git: Copies a git repository's tracked files into a guest."""
