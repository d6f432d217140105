"""What the mount shows, without FUSE: the ``Tree`` facade (``tree``) over one class per
kind of node (``node``: the protocol; ``builds``, ``groups``, ``unpacked``), the ``ls -l``
scan (``scan``), inode numbers (``inodes``), archive indexes (``archives``, ``zipview``),
names and the API's fields as files (``names``, ``views``)."""
