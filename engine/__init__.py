"""wharfie's engine core: pure policy over an abstract Kernel (see ``engine.kernel``).

Glossary (used the same way everywhere):

id
    A full 64-hex container id, or ``sha256:<64 hex>`` image id. Nothing shorter.
ref
    What a user typed to name an object: an id, a unique id prefix, or a name/reference.
reference
    An image name such as ``docker.io/library/busybox:latest`` (``engine.refs``).
digest
    ``sha256:<hex>`` of some content (a blob, a config, a manifest).
layer / diff_id
    A layer blob as stored (may be compressed) / the digest of its uncompressed tar.
chain_id
    The OCI chain id of a layer stack; used as the key of the committed snapshot holding it.
snapshot
    A Kernel snapshot: committed (an image layer) or active (a container's write layer).

The engine uses Docker's verbs (create/start/stop/kill/remove/pause/unpause); the Kernel uses
kernel words (spawn/signal/mount/cgroup_freeze).
"""

__version__ = "0.1.0"
