"""What the mount shows, without FUSE: the tree, views, names, ZIP members."""
