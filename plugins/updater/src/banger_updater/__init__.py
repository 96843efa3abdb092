"""banger-updater: ``banger update``, a signed self-update of an installed banger (docs/updating.md)."""
