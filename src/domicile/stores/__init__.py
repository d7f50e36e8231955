"""Site stores: where records, blind indexes and audit entries live, one store per site.

One small interface (``base``), two implementations (``sqlite``, ``postgres``), both run
through one contract test suite. Subject keys live apart from the data, in key stores
(``keystore``), so that destroying a key reaches every copy and backup of the data.
"""

from domicile.stores.base import (
    AuditRow,
    Checkpoint,
    IndexEntry,
    OutboxItem,
    SiteStore,
    StoredRecord,
    StoreTransaction,
    TransferCount,
)
from domicile.stores.keystore import KeyStore, WrappedKey
from domicile.stores.opening import open_key_store, open_site_store

__all__ = [
    "AuditRow",
    "Checkpoint",
    "IndexEntry",
    "KeyStore",
    "OutboxItem",
    "SiteStore",
    "StoreTransaction",
    "StoredRecord",
    "TransferCount",
    "WrappedKey",
    "open_key_store",
    "open_site_store",
]
