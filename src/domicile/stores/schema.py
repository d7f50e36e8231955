"""Versioned schemas for site and key stores, per SQL dialect.

Each migration is a list of statements taking a store from version N-1 to N. A store
records its version in ``meta``; opening applies the missing migrations in one
transaction and refuses a store whose version is newer than this code knows.
"""

from __future__ import annotations

from domicile.stores.base import NoSchema, SchemaOutdated, SchemaTooNew, StoreMismatch

BLOCKS_SQL = (
    "CREATE TABLE subject_blocks (subject_id TEXT NOT NULL, kind TEXT NOT NULL,"
    " request_id TEXT NOT NULL, since TEXT NOT NULL, by_client TEXT, allows TEXT NOT NULL,"
    " rules TEXT NOT NULL, PRIMARY KEY (subject_id, kind, request_id))"
)

SITE_MIGRATIONS: dict[str, dict[int, list[str]]] = {
    "sqlite": {
        1: [
            "CREATE TABLE records (record_id TEXT PRIMARY KEY, subject_id TEXT NOT NULL,"
            " collection TEXT NOT NULL, version INTEGER NOT NULL, created_at TEXT NOT NULL,"
            " updated_at TEXT NOT NULL, fields BLOB NOT NULL)",
            "CREATE INDEX records_subject ON records (subject_id)",
            "CREATE TABLE blind_index (collection TEXT NOT NULL, field TEXT NOT NULL,"
            " digest BLOB NOT NULL, record_id TEXT NOT NULL)",
            "CREATE INDEX blind_index_lookup ON blind_index (collection, field, digest)",
            "CREATE INDEX blind_index_record ON blind_index (record_id)",
            "CREATE TABLE audit (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL,"
            " prev_hash BLOB NOT NULL, hash BLOB NOT NULL)",
            "CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit"
            " BEGIN SELECT RAISE(ABORT, 'the audit ledger is append-only'); END",
            "CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit"
            " BEGIN SELECT RAISE(ABORT, 'the audit ledger is append-only'); END",
            "CREATE TABLE checkpoints (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL,"
            " signed_at TEXT NOT NULL, signature BLOB NOT NULL)",
        ],
        2: [],  # version 2 adds PostgreSQL's server-side audit append; nothing for SQLite
        3: [
            # Copies of other sites' primaries (replicas) carry the site of their primary.
            "ALTER TABLE records ADD COLUMN primary_site TEXT",
            "CREATE INDEX records_replicas ON records (primary_site, record_id)",
            # The replication outbox, written in the primary's own transactions.
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL,"
            " subject_id TEXT NOT NULL, target_site TEXT NOT NULL, op TEXT NOT NULL,"
            " created_at TEXT NOT NULL)",
            # Subjects exported per calendar year and destination (volume thresholds).
            "CREATE TABLE transfer_subjects (year INTEGER NOT NULL, to_country TEXT NOT NULL,"
            " subject_id TEXT NOT NULL, sensitive INTEGER NOT NULL,"
            " PRIMARY KEY (year, to_country, subject_id))",
        ],
        4: [],  # version 4 adds PostgreSQL's one-statement append; nothing for SQLite
        # Subjects erased here (random ids, no personal data): a write that found one of them
        # through the index just before the erasure is refused and redone as a new subject.
        5: ["CREATE TABLE erased_subjects (subject_id TEXT PRIMARY KEY, erased_at TEXT NOT NULL)"],
        # The audit log as a Merkle tree (domicile.audit.merkle): the site's signed tree
        # heads with their compact ranges, roots of complete subtrees kept for proofs, and
        # the heads of other sites this site has witnessed. Heads and witness records are
        # append-only, like the log.
        6: [
            "CREATE TABLE tree_heads (size INTEGER PRIMARY KEY, root BLOB NOT NULL,"
            " signed_at TEXT NOT NULL, signature BLOB NOT NULL, compact BLOB NOT NULL)",
            "CREATE TABLE tree_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL,"
            " hash BLOB NOT NULL, PRIMARY KEY (level, idx))",
            "CREATE TABLE witnessed (site TEXT NOT NULL, size INTEGER NOT NULL,"
            " root BLOB NOT NULL, signed_at TEXT NOT NULL, signature BLOB NOT NULL,"
            " seq INTEGER NOT NULL, PRIMARY KEY (site, size))",
            *(
                f"CREATE TRIGGER {table}_append_only_{op.lower()} BEFORE {op} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                for table in ("tree_heads", "witnessed")
                for op in ("UPDATE", "DELETE")
            ),
        ],
        # Blind indexes, compact (record layout 3): a keyed digest already names its
        # collection and field, so an entry is the digest and the record; clustered on the
        # digest. The old table's rows move over as they are (same digests).
        7: [
            "CREATE TABLE digests (digest BLOB NOT NULL, record_id TEXT NOT NULL,"
            " PRIMARY KEY (digest, record_id)) WITHOUT ROWID",
            "CREATE INDEX digests_record ON digests (record_id)",
            "INSERT OR IGNORE INTO digests SELECT digest, record_id FROM blind_index",
            "DROP TABLE blind_index",
        ],
        # A federation node's first answers to its peers' writing calls, by the digest of
        # each call's idempotency key, kept until they expire (no values: see
        # federation.node.StoredReplies), so a node restarted between a write and its
        # peer's retry answers the retry instead of doing the write again.
        8: [
            "CREATE TABLE node_replies (peer TEXT NOT NULL, op TEXT NOT NULL,"
            " key_digest BLOB NOT NULL, status INTEGER NOT NULL, answer TEXT NOT NULL,"
            " expires REAL NOT NULL, PRIMARY KEY (peer, op, key_digest)) WITHOUT ROWID",
            "CREATE INDEX node_replies_expires ON node_replies (expires)",
        ],
        # Processing blocks on subjects (a restriction of processing, a withdrawal of
        # consent), kept at each site that holds the subject: opaque ids, the request that
        # placed the block, when and by whom, and the legal bases a restriction still lets
        # the data be used for. No personal data.
        9: [BLOCKS_SQL],
    },
    "postgresql": {
        1: [
            "CREATE TABLE records (record_id TEXT PRIMARY KEY, subject_id TEXT NOT NULL,"
            " collection TEXT NOT NULL, version INTEGER NOT NULL, created_at TEXT NOT NULL,"
            " updated_at TEXT NOT NULL, fields BYTEA NOT NULL)",
            "CREATE INDEX records_subject ON records (subject_id)",
            "CREATE TABLE blind_index (collection TEXT NOT NULL, field TEXT NOT NULL,"
            " digest BYTEA NOT NULL, record_id TEXT NOT NULL)",
            "CREATE INDEX blind_index_lookup ON blind_index (collection, field, digest)",
            "CREATE INDEX blind_index_record ON blind_index (record_id)",
            "CREATE TABLE audit (seq BIGINT PRIMARY KEY, payload TEXT NOT NULL,"
            " prev_hash BYTEA NOT NULL, hash BYTEA NOT NULL)",
            "CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL,"
            " hash BYTEA NOT NULL)",
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, ''::bytea)",
            "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'the audit ledger is append-only'; END $$",
            "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit"
            " FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
            "CREATE TABLE checkpoints (seq BIGINT PRIMARY KEY, hash BYTEA NOT NULL,"
            " signed_at TEXT NOT NULL, signature BYTEA NOT NULL)",
        ],
        # Appending to the chain on the server: one round trip instead of four. The hash is
        # the one the verifier computes (domicile.stores.base.entry_hash).
        2: [
            "CREATE FUNCTION domicile_audit_append(payloads TEXT[])"
            " RETURNS TABLE (out_seq BIGINT, out_prev BYTEA, out_hash BYTEA) LANGUAGE plpgsql AS $$"
            " DECLARE h_seq BIGINT; h_hash BYTEA; p TEXT; d BYTEA;"
            " BEGIN"
            "   SELECT a.seq, a.hash INTO h_seq, h_hash FROM audit_head a WHERE a.id = 1 FOR UPDATE;"
            "   IF NOT FOUND THEN"
            "     INSERT INTO audit_head (id, seq, hash)"
            "       SELECT 1, coalesce(max(a.seq), 0),"
            "         coalesce((SELECT b.hash FROM audit b ORDER BY b.seq DESC LIMIT 1), ''::bytea)"
            "       FROM audit a ON CONFLICT (id) DO NOTHING;"
            "     SELECT a.seq, a.hash INTO h_seq, h_hash FROM audit_head a WHERE a.id = 1 FOR UPDATE;"
            "   END IF;"
            "   FOREACH p IN ARRAY payloads LOOP"
            "     h_seq := h_seq + 1;"
            "     d := sha256('domicile/audit/v1'::bytea || h_hash || int8send(h_seq) || convert_to(p, 'UTF8'));"
            "     INSERT INTO audit (seq, payload, prev_hash, hash) VALUES (h_seq, p, h_hash, d);"
            "     out_seq := h_seq; out_prev := h_hash; out_hash := d;"
            "     RETURN NEXT;"
            "     h_hash := d;"
            "   END LOOP;"
            "   UPDATE audit_head SET seq = h_seq, hash = h_hash WHERE id = 1;"
            " END $$",
        ],
        3: [
            "ALTER TABLE records ADD COLUMN primary_site TEXT",
            "CREATE INDEX records_replicas ON records (primary_site, record_id)",
            "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, record_id TEXT NOT NULL,"
            " subject_id TEXT NOT NULL, target_site TEXT NOT NULL, op TEXT NOT NULL,"
            " created_at TEXT NOT NULL)",
            "CREATE TABLE transfer_subjects (year INTEGER NOT NULL, to_country TEXT NOT NULL,"
            " subject_id TEXT NOT NULL, sensitive BOOLEAN NOT NULL,"
            " PRIMARY KEY (year, to_country, subject_id))",
        ],
        # One entry appended by one UPDATE of the head (which locks it, moves it on and
        # keeps the hash it replaces in ``prev``) feeding one INSERT: no function call and
        # no separate row lock (see ``postgres.APPEND_ONE_SQL``). ``prev`` means something
        # only inside that statement; the head's ``seq`` and ``hash`` stay the truth.
        4: ["ALTER TABLE audit_head ADD COLUMN prev BYTEA NOT NULL DEFAULT ''::bytea"],
        5: ["CREATE TABLE erased_subjects (subject_id TEXT PRIMARY KEY, erased_at TEXT NOT NULL)"],
        6: [
            "CREATE TABLE tree_heads (size BIGINT PRIMARY KEY, root BYTEA NOT NULL,"
            " signed_at TEXT NOT NULL, signature BYTEA NOT NULL, compact BYTEA NOT NULL)",
            "CREATE TABLE tree_nodes (level INTEGER NOT NULL, idx BIGINT NOT NULL,"
            " hash BYTEA NOT NULL, PRIMARY KEY (level, idx))",
            "CREATE TABLE witnessed (site TEXT NOT NULL, size BIGINT NOT NULL,"
            " root BYTEA NOT NULL, signed_at TEXT NOT NULL, signature BYTEA NOT NULL,"
            " seq BIGINT NOT NULL, PRIMARY KEY (site, size))",
            "CREATE TRIGGER tree_heads_append_only BEFORE UPDATE OR DELETE ON tree_heads"
            " FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
            "CREATE TRIGGER witnessed_append_only BEFORE UPDATE OR DELETE ON witnessed"
            " FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
        ],
        7: [
            "CREATE TABLE digests (digest BYTEA NOT NULL, record_id TEXT NOT NULL,"
            " PRIMARY KEY (digest, record_id))",
            "CREATE INDEX digests_record ON digests (record_id)",
            "INSERT INTO digests SELECT DISTINCT digest, record_id FROM blind_index",
            "DROP TABLE blind_index",
        ],
        8: [
            "CREATE TABLE node_replies (peer TEXT NOT NULL, op TEXT NOT NULL,"
            " key_digest BYTEA NOT NULL, status INTEGER NOT NULL, answer TEXT NOT NULL,"
            " expires DOUBLE PRECISION NOT NULL, PRIMARY KEY (peer, op, key_digest))",
            "CREATE INDEX node_replies_expires ON node_replies (expires)",
        ],
        9: [BLOCKS_SQL],
    },
}

KEY_MIGRATIONS: dict[str, dict[int, list[str]]] = {
    "sqlite": {
        1: [
            "CREATE TABLE subject_keys (subject_id TEXT PRIMARY KEY, kek_version INTEGER NOT NULL,"
            " wrapped BLOB NOT NULL, created_at TEXT NOT NULL)",
            "CREATE INDEX subject_keys_version ON subject_keys (kek_version)",
        ],
    },
    "postgresql": {
        1: [
            "CREATE TABLE subject_keys (subject_id TEXT PRIMARY KEY, kek_version INTEGER NOT NULL,"
            " wrapped BYTEA NOT NULL, created_at TEXT NOT NULL)",
            "CREATE INDEX subject_keys_version ON subject_keys (kek_version)",
        ],
    },
}

SITE_SCHEMA_VERSION = max(SITE_MIGRATIONS["sqlite"])
KEY_SCHEMA_VERSION = max(KEY_MIGRATIONS["sqlite"])


def label(kind: str) -> str:
    """How errors name a store of this kind: "its database" or "its key store"."""
    return "its key store" if kind == "key" else "its database"


def check_meta(meta: dict[str, str], site: str, kind: str, newest: int) -> int:
    """Refuse a store that belongs to another site, is another kind of store, or has a
    schema newer than this code; return its schema version (0 when it has none)."""
    owner = meta.get("site")
    if owner is not None and owner != site:
        raise StoreMismatch(
            site,
            f"the {kind} store configured for site {site!r} belongs to site {owner!r}",
            hint="nothing was written; check the backend URLs in the configuration",
        )
    if meta.get("kind", kind) != kind:
        raise StoreMismatch(site, f"this database is a {meta['kind']} store, not a {kind} store")
    current = int(meta.get("schema_version", 0))
    if current > newest:
        raise SchemaTooNew(
            f"site {site!r} has {kind} schema version {current}; this domicile knows up to {newest}",
            hint="upgrade domicile before opening this site",
        )
    return current


def check_creation(meta: dict[str, str], site: str, kind: str, expected: str | None) -> None:
    """Refuse a store whose creation id is not the one the deployment recorded for it: an
    empty store made in place of the site's, or another deployment's store of the same
    site id, is not the site."""
    if expected is None:
        return
    found = meta.get("creation_id")
    if found is None:
        raise StoreMismatch(
            site,
            f"{label(kind)} carries no creation id (made by an older domicile, or not by setup)",
            hint=f"if it is the site's own, adopt it once: `domicile sites create {site} --adopt`",
        )
    if found != expected:
        raise StoreMismatch(
            site,
            f"{label(kind)} is not the one this deployment created for it (another creation id)",
            hint="nothing was written; a database was swapped or made anew: put the site's own back",
        )


def check_current(meta: dict[str, str], site: str, kind: str, newest: int) -> int:
    """For a read-only open: the store must have a schema, and the newest one (reads never
    migrate). Returns the schema version."""
    current = check_meta(meta, site, kind, newest)
    if current == 0:
        raise NoSchema(site, f"{label(kind)} has no domicile schema")
    if current < newest:
        raise SchemaOutdated(
            site,
            f"{label(kind)} has schema version {current}; this domicile reads version {newest}",
            hint="upgrade it once with a command that may write: `domicile sites migrate`",
        )
    return current
