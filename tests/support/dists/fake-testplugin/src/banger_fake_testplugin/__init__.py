"""tests/support/banger_fake.py and fake_vmm.py as an installable plugin (see ../../../README.md)."""
