"""index seam."""
