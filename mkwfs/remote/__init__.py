"""The wire and the API: libcurl transport, API calls, models, errors."""
