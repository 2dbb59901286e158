"""The ``sql`` source driver: logical, database-agnostic backups through SQLAlchemy.

PostgreSQL (pg8000), MariaDB/MySQL (PyMySQL) and SQLite. A backup is one consistent
snapshot (:mod:`.connect` says what each dialect guarantees) written as::

    schema.json               tables, columns and portable types, keys, indexes, enums,
                              foreign-key order, filters used  (:mod:`.schema`)
    tables/<name>.jsonl       the rows, one JSON object per line, lossless (:mod:`.codec`)

Modules: :mod:`.config` (the config), :mod:`.filters` (the row-filter grammar),
:mod:`.codec` (value encoding and conversions), :mod:`.schema` (capture, order, type
mapping, CREATE TABLE), :mod:`.dump` (backup), :mod:`.restore` (dry-run, merge,
replace), :mod:`.export` (table list, CSV/JSON Lines, zip), :mod:`.clear` (delete
rows, keeping some), :mod:`.driver` (the :class:`SqlDriver` glue).
"""

from shared.sources.sql.driver import SqlDriver

__all__ = ["SqlDriver"]
