"""Fixtures every test here may use: the loopback registry (defined beside the rest of the registry kit)."""

from plugins.oci.tests.registry_lab import registry  # noqa: F401  (a fixture: pytest finds it by name)
