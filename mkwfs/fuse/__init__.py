"""The pyfuse3 edge: Operations, the mount's life cycle, start-up checks, control socket."""
