"""Facts from the API and how long each holds: TTL caches."""
