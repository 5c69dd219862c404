"""Text generation: a warm worker process (``worker.py``) and its server-side runner."""
