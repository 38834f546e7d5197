"""Shared building blocks: attention, feed-forward, position encodings."""
