"""Evidence for inspectors: the evidence pack (``pack.py``) and its offline checker
(``verifier.py``, shipped in every pack as ``verify.py``)."""
