"""mesh-tui: the command line and (later) the Textual app for an Agent Mesh node."""
