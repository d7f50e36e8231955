"""Moved to ``domicile.deploy.starter``. This alias stays only while
``domicile/bench/http.py`` (owned by another branch) imports the old name; delete it once
that import reads ``from domicile.deploy.starter import init``."""

from domicile.deploy.starter import init

__all__ = ["init"]
