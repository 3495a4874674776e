"""Every SQL statement multinode runs, and the schema's history.

All dicts of a store share one table, ``mn_item``, keyed by the dict's id and
the key's canonical bytes, so opening a new dict is one catalog row and never
a schema change. A dict's name is only ever a bound parameter.

An item's ``pos`` is its insertion position: the dict's id times 2**40 plus a
per-dict counter. A dict's items are therefore one range of rowids, already
in insertion order, and a replaced key keeps its ``pos``. Positions are never
reused, so an iterator that stops at the highest position it saw when it
began never meets a key inserted after that.

A new item takes the position after the dict's highest one, which is either
its newest item's, found at the end of its rowid range, or, when that item
is gone, the catalog's ``last_pos``. Only a removal writes the catalog: it
counts itself in ``removed`` and raises ``last_pos``, in the same statement,
by a trigger. So inserting writes one table, and ``len`` is still two
lookups: positions used minus items removed.
"""

from __future__ import annotations

APPLICATION_ID = 0x4D4E4F44  # "MNOD"
FORMAT_VERSION = 3
POS_BITS = 40
# The highest dict id: (id + 1) << POS_BITS, the end of its positions, must
# still fit in SQLite's signed 64-bit integers.
MAX_DICT_ID = (1 << (63 - POS_BITS)) - 2

# Each entry upgrades the schema from version i to i + 1; a new store runs
# them all, from 0, in the transaction that creates it.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE mn_dict (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            name       BLOB NOT NULL UNIQUE,
            serializer TEXT NOT NULL,
            length     INTEGER NOT NULL DEFAULT 0,
            last_pos   INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE mn_item (
            pos      INTEGER PRIMARY KEY,
            dict     INTEGER NOT NULL,
            key      BLOB NOT NULL,  -- BLOB affinity: a str key stays TEXT
            key_form BLOB,
            value    BLOB
        )
        """,
        "CREATE UNIQUE INDEX mn_item_key ON mn_item (dict, key)",
        """
        CREATE TRIGGER mn_item_added AFTER INSERT ON mn_item BEGIN
            UPDATE mn_dict SET length = length + 1, last_pos = NEW.pos
            WHERE id = NEW.dict;
        END
        """,
        """
        CREATE TRIGGER mn_item_removed AFTER DELETE ON mn_item BEGIN
            UPDATE mn_dict SET length = length - 1 WHERE id = OLD.dict;
        END
        """,
    ),
    # Version 2: values too big for one SQLite BLOB live in numbered chunks;
    # such an item's own value is NULL.
    (
        """
        CREATE TABLE mn_chunk (
            pos  INTEGER NOT NULL,
            n    INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (pos, n)
        )
        """,
        """
        CREATE TRIGGER mn_item_removed_chunks AFTER DELETE ON mn_item
        WHEN OLD.value IS NULL BEGIN
            DELETE FROM mn_chunk WHERE pos = OLD.pos;
        END
        """,
        """
        CREATE TRIGGER mn_item_replaced_chunks AFTER UPDATE OF value ON mn_item
        WHEN OLD.value IS NULL BEGIN
            DELETE FROM mn_chunk WHERE pos = OLD.pos;
        END
        """,
    ),
    # Version 3: an insert no longer writes the catalog, which cost a third
    # of a new key's time. The catalog counts removals instead of items, and
    # its last_pos only keeps the positions of removed items from reuse.
    # The chunk triggers lose their "WHEN OLD.value IS NULL": naming the old
    # value made SQLite read all of it, a megabyte to replace a megabyte,
    # which cost five times the write itself.
    (
        "DROP TRIGGER mn_item_added",
        "DROP TRIGGER mn_item_removed",
        "DROP TRIGGER mn_item_removed_chunks",
        "DROP TRIGGER mn_item_replaced_chunks",
        "ALTER TABLE mn_dict ADD COLUMN removed INTEGER NOT NULL DEFAULT 0",
        f"UPDATE mn_dict SET removed = last_pos - (id << {POS_BITS}) - length",
        "ALTER TABLE mn_dict DROP COLUMN length",
        """
        CREATE TRIGGER mn_item_removed AFTER DELETE ON mn_item BEGIN
            UPDATE mn_dict
            SET removed = removed + 1, last_pos = max(last_pos, OLD.pos)
            WHERE id = OLD.dict;
            DELETE FROM mn_chunk WHERE pos = OLD.pos;
        END
        """,
        """
        CREATE TRIGGER mn_item_replaced AFTER UPDATE OF value ON mn_item BEGIN
            DELETE FROM mn_chunk WHERE pos = OLD.pos;
        END
        """,
    ),
)
assert len(MIGRATIONS) == FORMAT_VERSION

# The store ---------------------------------------------------------------

READ_HEADER = """
SELECT
    (SELECT application_id FROM pragma_application_id),
    (SELECT user_version FROM pragma_user_version),
    (SELECT count(*) FROM sqlite_schema)
"""
SET_APPLICATION_ID = f"PRAGMA application_id = {APPLICATION_ID}"
SET_FORMAT_VERSION = "PRAGMA user_version = {version:d}"

# The catalog -------------------------------------------------------------

# A dict's highest position so far, as an expression over its mn_dict row:
# its newest item's, or the highest removed one's. The subquery is one step
# back from the end of the dict's rowid range.
_HIGHEST = f"""max(last_pos, coalesce(
    (SELECT max(pos) FROM mn_item WHERE pos < (id + 1) << {POS_BITS}), 0))"""
_LENGTH = f"{_HIGHEST} - (id << {POS_BITS}) - removed"

FIND_DICT = "SELECT id, serializer FROM mn_dict WHERE name = ?"
CREATE_DICT = """
INSERT INTO mn_dict (name, serializer, last_pos) VALUES (?, ?, 0)
ON CONFLICT (name) DO NOTHING
"""
# A dict's positions start just above its id times 2**POS_BITS.
START_POSITIONS = f"UPDATE mn_dict SET last_pos = id << {POS_BITS} WHERE id = ?"
DICT_NAMES = "SELECT name FROM mn_dict ORDER BY id"
DICT_SUMMARY = f"SELECT name, {_LENGTH}, serializer FROM mn_dict ORDER BY id"
DICT_EXISTS = "SELECT 1 FROM mn_dict WHERE id = ?"
DELETE_DICT_ITEMS = "DELETE FROM mn_item WHERE dict = ?"
DELETE_DICT = "DELETE FROM mn_dict WHERE id = ?"
LENGTH = f"SELECT {_LENGTH} FROM mn_dict WHERE id = ?"
LAST_POS = f"SELECT {_HIGHEST} FROM mn_dict WHERE id = ?"
# Chunks of no big value: their item is gone, or holds its value inline.
STRAY_CHUNKS = """
SELECT count(*) FROM mn_chunk c LEFT JOIN mn_item i ON i.pos = c.pos
WHERE i.pos IS NULL OR i.value IS NOT NULL
"""
# Big values whose chunks are not all there: none, or a gap in their numbers.
INCOMPLETE_BIG_VALUES = """
SELECT count(*) FROM mn_item i WHERE i.value IS NULL
AND (SELECT count(*) FROM mn_chunk c WHERE c.pos = i.pos)
    != coalesce((SELECT max(n) + 1 FROM mn_chunk c WHERE c.pos = i.pos), -1)
"""
# Dicts whose counted length disagrees with their items, and items outside
# their dict's range of positions.
CHECK_DICTS = f"""
SELECT name, 'length ' || length || ' but ' || items || ' items' FROM (
    SELECT name, {_LENGTH} AS length,
           (SELECT count(*) FROM mn_item WHERE dict = id) AS items
    FROM mn_dict
)
WHERE length != items
UNION ALL
SELECT coalesce(d.name, CAST('(no dict) ' || i.dict AS BLOB)),
       'an item at position ' || i.pos || ', outside its positions'
FROM mn_item i LEFT JOIN mn_dict d ON d.id = i.dict
WHERE i.pos >> {POS_BITS} != i.dict OR d.id IS NULL
"""

# Items -------------------------------------------------------------------

GET = "SELECT value, pos FROM mn_item WHERE dict = ? AND key = ?"
# The common read: the value alone, which is measurably cheaper than two
# columns; a NULL value is a big one, whose position GET then finds.
GET_VALUE = "SELECT value FROM mn_item WHERE dict = ? AND key = ?"
CONTAINS = "SELECT 1 FROM mn_item WHERE dict = ? AND key = ?"
# Insert or replace in one statement; a replaced key keeps its position and
# its first-stored key form. The dict's id comes from a subquery that finds
# nothing when the dict was deleted (or has used up its positions), and the
# NOT NULL on `dict` then refuses the row: nothing is written. VALUES rather
# than INSERT ... SELECT, because a SELECT that reads the table it inserts
# into makes SQLite copy each row, value included, through a temporary table.
# Parameters: key, key form, value, dict id, dict id.
_NEW_ITEM = f"""
INSERT INTO mn_item (key, key_form, value, pos, dict) VALUES (
    ?, ?, ?,
    (SELECT {_HIGHEST} + 1 FROM mn_dict WHERE id = ?),
    (SELECT id FROM mn_dict WHERE id = ? AND {_HIGHEST} + 1 < (id + 1) << {POS_BITS})
)
"""
PUT = f"""{_NEW_ITEM}
ON CONFLICT (dict, key) DO UPDATE SET value = excluded.value
"""
PUT_RETURNING_POS = PUT + " RETURNING pos"
PUT_IF_ABSENT = f"""{_NEW_ITEM}
ON CONFLICT (dict, key) DO NOTHING
"""
SET_VALUE = "UPDATE mn_item SET value = ? WHERE pos = ?"
DELETE = "DELETE FROM mn_item WHERE dict = ? AND key = ?"
DELETE_AT = "DELETE FROM mn_item WHERE pos = ?"
# Parameters: the dict's base position, and the next dict's.
LAST_ITEM = """
SELECT pos, key, key_form, value FROM mn_item
WHERE pos > ? AND pos < ?
ORDER BY pos DESC LIMIT 1
"""
VALUE_AT = "SELECT value FROM mn_item WHERE pos = ?"

# Pages for iteration: positions after the last one seen, up to the bound
# fixed when the iteration began.
# A key's exact form where it has one, else its canonical form.
KEYS_PAGE = """
SELECT pos, coalesce(key_form, key) FROM mn_item
WHERE pos > ? AND pos <= ? ORDER BY pos LIMIT ?
"""
KEYS_PAGE_REVERSED = """
SELECT pos, coalesce(key_form, key) FROM mn_item
WHERE pos > ? AND pos <= ? ORDER BY pos DESC LIMIT ?
"""
ITEMS_PAGE = """
SELECT pos, key, key_form, value FROM mn_item
WHERE pos > ? AND pos <= ? ORDER BY pos LIMIT ?
"""

# Big values --------------------------------------------------------------

CHUNKS = "SELECT data FROM mn_chunk WHERE pos = ? ORDER BY n"
PUT_CHUNK = "INSERT INTO mn_chunk (pos, n, data) VALUES (?, ?, ?)"

# Transactions ------------------------------------------------------------

BEGIN_WRITE = "BEGIN IMMEDIATE"
BEGIN_READ = "BEGIN"
TAKE_READ_LOCK = "SELECT 1 FROM sqlite_schema LIMIT 1"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
SAVEPOINT = "SAVEPOINT mn_nested_{depth:d}"
RELEASE = "RELEASE mn_nested_{depth:d}"
ROLLBACK_TO = "ROLLBACK TO mn_nested_{depth:d}"
