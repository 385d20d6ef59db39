"""The workbench's five panes, one module each."""
