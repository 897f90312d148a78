"""Drivers of the peer projects; each runs in its own venv under bench/.venvs/."""
