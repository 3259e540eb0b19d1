"""leakbench inside other frameworks, each behind an optional extra (``verifiers``: a
``verifiers`` environment, ``pip install 'leakbench[verifiers]'``)."""
