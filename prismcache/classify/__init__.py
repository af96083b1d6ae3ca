"""classify seam."""
