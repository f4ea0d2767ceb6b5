"""Small helpers shared by every layer; nothing here imports the rest of transrec but ``transrec.errors``
(which imports nothing of transrec)."""
