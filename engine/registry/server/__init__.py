"""``wharfie registry serve``: an OCI distribution-spec registry (see ``app``)."""
