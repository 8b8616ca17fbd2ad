"""The private Docker engine of tests/dockerd.py, tested on its own."""
