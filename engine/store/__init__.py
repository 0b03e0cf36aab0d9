"""Persistent stores: content-addressed blobs, SQLite metadata, consistency checks."""
