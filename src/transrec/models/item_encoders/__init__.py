"""Item encoders, one file each, one registry (``ITEM_ENCODERS``)."""
