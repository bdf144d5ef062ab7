"""Screens over the main view: help, node detail, task detail and the conflict resolver."""
