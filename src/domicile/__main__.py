"""``python -m domicile``: the ``domicile`` command. ``spark-submit`` runs this file to
start a scan on a cluster (the README, "Discovery", on Spark)."""

from domicile.cli.app import main

if __name__ == "__main__":
    main()
