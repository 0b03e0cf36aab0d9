"""Registries: a distribution-spec client (pull, push, login) and a registry server.

Modules: ``options`` (mirrors, insecure registries, CAs, concurrency), ``endpoints`` (reference →
registry host + repository, scheme), ``credentials`` (Docker's ``config.json``), ``session``
(one HTTP session per registry: auth challenges, retries, redirects that never carry
credentials to another host), ``manifests`` (parsing, validation, platform selection),
``pull`` / ``push`` (the verbs, with Docker's NDJSON progress messages) and ``server``
(``wharfie registry serve``).

The client is synchronous (httpx) and runs on worker threads: the engine's ``image_pull`` /
``image_push`` hand the whole transfer to a thread, so hashing and file IO never stall the
daemon's event loop, and layers download in parallel on a small thread pool.
"""
