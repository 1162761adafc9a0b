"""The sample app's HTTP API."""
