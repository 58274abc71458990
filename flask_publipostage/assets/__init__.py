"""Fonts and scripts served or embedded by the extension."""
