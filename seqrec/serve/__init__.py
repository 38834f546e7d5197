"""Serving: a real-time next-item HTTP service, batch inference and ONNX export.

`store` keeps user histories (SQLite by default), `index` retrieves top-k items (exact or
faiss), `engine` ties a loaded run to both, `app` is the FastAPI service, `predict` and `export`
are the offline paths, and `commands` adds `seqrec serve | predict | export` to the CLI.
"""
