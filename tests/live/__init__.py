"""The compose stack run for real on a private dockerd."""
