"""``domicile migrate``: move the subjects a scan's findings name into their home sites,
through the vault, and leave tokens (or nothing) in the source in their place.

Three steps, each its own command:

- **plan** scans the source (reading only), proposes a mapping of columns to the fields of
  a collection from the columns' categories, places every subject a finding names with
  the vault's own placement, and writes it all to a plan file the user can edit: which
  rows of which tables move, which columns go to which field, what the legacy values
  become (``tokens`` or ``delete``), and how many subjects go to each site. The plan is
  sealed (an HMAC under a key of the deployment) over all it does not invite to edit
  (source, subjects and their residencies, ids, and keyed digests of a sample of rows
  that tie it to its database); ``open_planned_source`` checks it all, for run and verify.
- **run** moves the rows, batch by batch. A batch is one transaction of the source: its
  rows are locked (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL, MariaDB: ``SELECT ... FOR
  UPDATE``), put into the vault, then rewritten, then committed. Each row's record id is
  derived from the plan's id, the table and the row's key (every column of a composite
  key, written as ``keys.key_text`` writes it), so a run killed between the
  vault's commit and the source's finds the records already written and only rewrites the
  rows (a record holding other values than its row's is never taken for it): nothing
  lost, nothing written twice. The journal (a SQLite file beside the plan)
  holds each row's intent before the vault write and marks it done after the source's
  commit; it is what ``verify`` checks a deleted value against.
- **verify** reads only: every moved row holds the token of its own record (or nothing,
  for ``delete``), every token resolves to a record that exists, the counts agree, no
  value of a moved row still matches a moved record's blind index, and every site's
  audit log verifies.

No value of the source is ever printed, logged or written anywhere but the vault: plans,
journals and reports name tables, columns, keys, sites and counts.
"""

from domicile.discovery.migration.checking import verify
from domicile.discovery.migration.journal import Journal
from domicile.discovery.migration.moving import Outcome, run
from domicile.discovery.migration.plan import (
    Plan,
    TablePlan,
    load_plan,
    make_plan,
    open_planned_source,
    save_plan,
)

__all__ = [
    "Journal",
    "Outcome",
    "Plan",
    "TablePlan",
    "load_plan",
    "make_plan",
    "open_planned_source",
    "run",
    "save_plan",
    "verify",
]
