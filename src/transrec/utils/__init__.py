"""Small helpers shared by every layer; nothing here imports the rest of transrec."""
