"""One pane per module: local_node, nodes_table, task_queues, conflict_inbox, event_log, command_input."""
