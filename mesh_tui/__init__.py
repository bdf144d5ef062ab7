"""mesh-tui: the command line, the headless runner and the Textual cockpit for an Agent Mesh node."""
