"""The volunteer side: registration, calibration, heartbeat, and running one chunk."""
