"""A doctor check that always fails (see ../../../README.md)."""
