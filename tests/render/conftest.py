"""Render tier: files berth generates, checked by the real programs from Debian packages.

The throwaway servers live in ``servers.py`` (importable as ``servers``: pytest puts this directory on
``sys.path`` because it holds a conftest and no ``__init__.py``). A missing program fails; nothing skips.
"""
