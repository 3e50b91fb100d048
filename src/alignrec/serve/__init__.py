"""Serving: per-user pre-cache of top-K recommendations in a cache store (SQLite or Redis),
new-item registration through the tokenizer's cold start, and the HTTP API."""
