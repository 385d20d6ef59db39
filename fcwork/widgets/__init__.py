"""Reusable widgets of the workbench: a braille line plot, bars, modal dialogs."""
