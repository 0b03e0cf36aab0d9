#!/bin/sh
# See cli_startup.py (hyperfine when installed, else a Python timing loop).
exec python3 "$(dirname "$0")/cli_startup.py" "$@"
