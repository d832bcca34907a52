"""Rendering: text, JSON and HTML views of figures. Nothing here counts."""
