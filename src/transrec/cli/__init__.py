"""The ``transrec`` command: thin argument parsing over library functions."""
