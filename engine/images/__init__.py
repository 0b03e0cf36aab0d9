"""Images: config documents, ``--change`` parsing, the image store (import/tag/list/remove)."""
