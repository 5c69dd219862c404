"""The LSP machinery, no domain knowledge: pygls fixes, the stdio loop, the server base, progress.

``pygls_adapter`` is the only module that touches pygls' private members; ``framing`` reads
and writes the base protocol's frames, ``stdio`` runs the loop, ``server`` is the base class
(``cortex_method``, ``notify``, ``log``, ``after_response``) and ``progress`` the
``$/progress`` helpers.
"""
