"""banger-debootstrap: Builds images locally from a recipe with debootstrap."""
