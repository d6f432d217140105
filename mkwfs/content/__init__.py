"""Bodies only: the content store, its extents map, ZIP read hints."""
