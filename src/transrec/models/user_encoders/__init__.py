"""User encoders, one file each, one registry (``USER_ENCODERS``)."""
