"""Erasure racing writes from other workers, on SQLite and PostgreSQL.

Two ``Domicile`` objects on one deployment stand for two worker processes: each has its
own connections and its own cache of data keys. The race: a worker finds a subject
through its identity index, another worker erases that subject, then the first writes.
Nothing may survive the erasure, and the person is not left blocked: the late write starts
a new subject with a key of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from domicile.vault import Domicile
from domicile.vault.errors import NotFound

from .conftest import IVAN, Deployment

RU = {"citizenship": "RU"}


def erase_after_lookup(worker: Domicile, eraser: Domicile, token: str) -> None:
    """Make ``worker``'s next identity lookup at the Russian site be followed, at once, by
    ``eraser`` erasing the subject of ``token``: exactly the window of the race."""
    store = worker.store("ru")
    real: Callable[..., dict[bytes, str]] = store.subjects_for
    fired: list[Any] = []

    def lookup_then_erase(digests: Sequence[bytes]) -> Any:
        found = real(digests)
        if not fired:
            fired.append(eraser.erase(token, purpose="subject_request"))
        return found

    store.subjects_for = lookup_then_erase  # type: ignore[method-assign]


def subject_rows(deployment: Deployment) -> list[tuple[str, str]]:
    rows = deployment.execute("ru", "SELECT record_id, subject_id FROM records")
    return [(str(r), str(s)) for r, s in rows]


@pytest.mark.parametrize("key_cached", [True, False], ids=["key-cached", "key-not-cached"])
def test_a_write_racing_an_erasure_starts_a_new_subject(
    deployment: Deployment, key_cached: bool
) -> None:
    eraser = deployment.open()
    worker = deployment.open()
    try:
        first = eraser.put("profiles", subject=RU, fields=IVAN, purpose="signup")
        if key_cached:  # the worker has used the subject's key before
            worker.put("profiles", subject=RU, fields={**IVAN, "city": "Perm"}, purpose="signup")
        old_subjects = {s for _, s in subject_rows(deployment)}
        assert len(old_subjects) == 1

        erase_after_lookup(worker, eraser, first.token)
        late = worker.put("profiles", subject=RU, fields={**IVAN, "city": "Omsk"}, purpose="signup")

        assert late.subject_is_new
        rows = subject_rows(deployment)
        assert len(rows) == 1  # only the late record, and not under the erased subject
        assert rows[0][1] not in old_subjects
        with pytest.raises(NotFound):
            worker.get(first.token, purpose="view", as_site="ru")
    finally:
        eraser.close()
        worker.close()

    # A fresh process reads the late record, and the same person's next record joins it.
    fresh = deployment.open()
    try:
        assert fresh.get(late.token, purpose="view", as_site="ru").fields["city"] == "Omsk"
        again = fresh.put("profiles", subject=RU, fields=IVAN, purpose="signup")
        assert not again.subject_is_new
        assert {s for _, s in subject_rows(deployment)} == {rows[0][1]}
    finally:
        fresh.close()


def test_a_batch_spanning_an_erased_and_a_live_subject_writes_every_record(
    deployment: Deployment,
) -> None:
    eraser = deployment.open()
    worker = deployment.open()
    anna = {"full_name": "Anna Volkova", "email": "anna.volkova@example.ru"}
    try:
        gone = eraser.put("profiles", subject=RU, fields=IVAN, purpose="signup")
        eraser.put("profiles", subject=RU, fields=anna, purpose="signup")
        worker.put("profiles", subject=RU, fields={**IVAN, "city": "Perm"}, purpose="signup")

        erase_after_lookup(worker, eraser, gone.token)
        out = worker.put_many(
            "profiles",
            [
                {"subject": RU, "fields": {**IVAN, "city": "Omsk"}},
                {"subject": RU, "fields": {**anna, "city": "Tver"}},
            ],
            purpose="signup",
        )
        assert [r.subject_is_new for r in out] == [True, False]
        fields = [worker.get(r.token, purpose="view", as_site="ru").fields for r in out]
        assert [f["city"] for f in fields] == ["Omsk", "Tver"]
        assert len(subject_rows(deployment)) == 3  # Anna's two, and Ivan's new one
    finally:
        eraser.close()
        worker.close()
