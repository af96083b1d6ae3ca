"""embedders seam."""
