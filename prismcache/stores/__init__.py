"""stores seam."""
