"""Route modules: each starts with its ROUTES table (method, path, handler)."""
