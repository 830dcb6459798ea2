"""Renderers: turn the logic modules' dataclasses into a rich table, a live view, plain
lines or JSON.  Only cli.py picks one; logic modules never print."""
