"""Fixtures for integration tests: the loopback docker-registry of the OCI tests (its kit lives with them)."""

from plugins.oci.tests.registry_lab import registry  # noqa: F401  (a fixture: pytest finds it by name)
