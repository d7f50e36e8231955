"""The guided tours: the decision engine over a sample population (``policy``) and the
embedded three-site vault (``vault``). Sample data only, no real people."""
