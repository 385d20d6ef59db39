"""fcwork: the FusterCluck workbench (Textual app and CLI). Never imports torch at start-up."""

__version__ = "0.1.0"
