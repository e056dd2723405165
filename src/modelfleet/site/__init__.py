"""The site agent: everything that keeps models serving at one site, with or without the hub.

A site dials out to the hub for changes but never needs it to keep running, so the pieces
here (the onnxruntime wrapper, the in-memory set of loaded models, the content-addressed
blob cache and the durable SQLite state) are all local and restart from disk alone.
"""
