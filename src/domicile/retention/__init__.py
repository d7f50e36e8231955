"""Retention: what the configuration says is kept for how long, what is due, and its
destruction by crypto-shredding with acts of destruction (see ``service.py``)."""

from domicile.retention.service import add_period, plan, run

__all__ = ["add_period", "plan", "run"]
