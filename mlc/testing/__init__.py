"""Helpers for testing mlc (and models) against other frameworks."""
