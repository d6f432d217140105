"""Every fact from the API but sizes, and how long each holds: the ``Catalog``
(``listings``), its TTL caches (``cache``), stale-if-error (``stale``) and the store of last
good copies with their fetch times (``store``). Imports only ``mkwfs.remote``."""
