"""The hash-chained log itself, on SQLite and PostgreSQL (``database_url``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import eventlet
import pytest
import sqlalchemy as sa
from marshmallow import ValidationError

from services.audit.canonical import GENESIS_HASH, canonical_json, chain_hash
from services.audit.log import (
    AuditLog,
    AuditLogCorrupt,
    DuplicateEventConflict,
    audit_chain_head,
    audit_records,
)
from services.audit.schemas import AuditEventRecord
from shared.errors import ServiceUnavailable, ValidationFailed
from shared.wire import audit_event


def make_event(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "action": "backup.create",
        "resource": {"type": "backup", "id": "b-1"},
        "outcome": "success",
        "actor": {"type": "user", "id": "alice"},
        "tenant": "acme",
        "request_id": "req-1",
    }
    at = overrides.pop("at", None)
    fields.update(overrides)
    event = audit_event(**fields)
    if at is not None:
        event["at"] = at
    return event


@pytest.fixture
def audit_log(database_url: str) -> Iterator[AuditLog]:
    log = AuditLog.open(database_url)
    yield log
    log.dispose()


def append_all(log: AuditLog, events: list[dict[str, Any]]) -> None:
    for event in events:
        log.append(AuditEventRecord().load(event))


def execute(log: AuditLog, statement: Any, **params: Any) -> None:
    """Tamper with the table behind the log's back, as an attacker with DB access."""
    with log.engine.begin() as conn:
        conn.execute(statement, params)


# -- append ---------------------------------------------------------------------------


def test_append_chains_each_record_to_the_previous_one(audit_log: AuditLog) -> None:
    events = [make_event(resource={"type": "backup", "id": f"b-{i}"}) for i in range(3)]
    results = [audit_log.append(e) for e in events]

    assert [r.seq for r in results] == [1, 2, 3]
    prev = GENESIS_HASH
    for event, result in zip(events, results, strict=True):
        assert result.hash == chain_hash(prev, canonical_json(event))
        assert not result.duplicate
        prev = result.hash

    items = audit_log.query({})["items"]
    assert [i["seq"] for i in items] == [3, 2, 1]
    assert items[-1]["prev_hash"] == GENESIS_HASH
    assert items[0]["prev_hash"] == items[1]["hash"]
    stored = {k: v for k, v in items[-1].items() if k not in ("seq", "prev_hash", "hash")}
    assert stored == events[0]


def test_the_stored_body_is_the_canonical_text(audit_log: AuditLog) -> None:
    event = make_event(details={"zeta": 1, "alpha": "ü", "nested": {"b": [1, 2], "a": None}})
    audit_log.append(event)
    with audit_log.engine.connect() as conn:
        body = conn.execute(sa.select(audit_records.c.body)).scalar_one()
    assert body == json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert '"alpha":"ü"' in body


def test_the_same_event_twice_is_stored_once(audit_log: AuditLog) -> None:
    event = make_event()
    first = audit_log.append(event)
    again = audit_log.append(dict(event))

    assert again.duplicate
    assert (again.seq, again.hash) == (first.seq, first.hash)
    assert audit_log.query({})["total"] == 1
    assert audit_log.verify()["ok"]


def test_awkward_but_valid_events_are_stored_and_verify(audit_log: AuditLog) -> None:
    """A client picks the X-Request-Id; no value of it may keep a request unaudited."""
    long_request = make_event(request_id="r" * 5000)
    nul_actor = make_event(actor={"type": "user", "id": "a\x00b"}, request_id="x\x00y")
    append_all(audit_log, [long_request, nul_actor])

    assert audit_log.query({"request_id": "r" * 5000})["items"][0]["id"] == long_request["id"]
    (item,) = audit_log.query({"actor_id": "a\ufffdb"})["items"]
    assert item["actor"]["id"] == "a\x00b"  # the body keeps the exact value
    assert audit_log.verify()["ok"]


def test_another_event_under_a_stored_id_is_refused(audit_log: AuditLog) -> None:
    event = make_event()
    audit_log.append(event)
    with pytest.raises(DuplicateEventConflict) as info:
        audit_log.append({**event, "outcome": "failure"})
    assert info.value.code == "duplicate_event_conflict"
    assert audit_log.query({})["total"] == 1


def test_concurrent_appends_from_two_instances_form_one_chain(database_url: str) -> None:
    """Two logs on one database stand in for two service instances."""
    first, second = AuditLog.open(database_url), AuditLog.open(database_url)
    try:
        pool = eventlet.GreenPool(20)
        events = [make_event(resource={"type": "backup", "id": str(i)}) for i in range(60)]
        results = list(
            pool.imap(lambda ie: (first, second)[ie[0] % 2].append(ie[1]), enumerate(events))
        )
        assert sorted(r.seq for r in results) == list(range(1, 61))
        report = first.verify()
        assert report["ok"], report
        assert report["records"] == 60
    finally:
        first.dispose()
        second.dispose()


# -- verify ---------------------------------------------------------------------------


def test_verify_an_empty_log(audit_log: AuditLog) -> None:
    assert audit_log.verify() == {
        "ok": True,
        "records": 0,
        "head": None,
        "first_bad": None,
        "reason": None,
    }


def test_verify_an_intact_log_in_small_batches(audit_log: AuditLog) -> None:
    results = [audit_log.append(make_event()) for _ in range(7)]
    assert audit_log.verify(batch_size=2) == {
        "ok": True,
        "records": 7,
        "head": results[-1].hash,
        "first_bad": None,
        "reason": None,
    }


def test_verify_narrowed_to_a_tenant(audit_log: AuditLog) -> None:
    audit_log.append(make_event(tenant="acme"))
    last_acme = audit_log.append(make_event(tenant="acme"))
    audit_log.append(make_event(tenant="globex"))
    audit_log.append(make_event(tenant=None))

    assert audit_log.verify("acme") == {
        "ok": True,
        "records": 2,
        "head": last_acme.hash,
        "first_bad": None,
        "reason": None,
    }
    assert audit_log.verify("nobody")["records"] == 0


def test_verify_detects_an_edited_body(audit_log: AuditLog) -> None:
    for _ in range(4):
        audit_log.append(make_event())
    execute(
        audit_log,
        sa.update(audit_records)
        .where(audit_records.c.seq == 2)
        .values(body=sa.func.replace(audit_records.c.body, '"success"', '"failure"')),
    )
    report = audit_log.verify()
    assert report["ok"] is False
    assert report["first_bad"] == 2
    assert report["records"] == 1
    assert "hash does not match" in report["reason"]


def test_verify_detects_an_edited_body_even_with_its_hash_recomputed(
    audit_log: AuditLog,
) -> None:
    events = [make_event() for _ in range(4)]
    results = [audit_log.append(e) for e in events]
    forged = canonical_json({**events[1], "outcome": "denied"})
    execute(
        audit_log,
        sa.update(audit_records)
        .where(audit_records.c.seq == 2)
        .values(body=forged, outcome="denied", hash=chain_hash(results[0].hash, forged)),
    )
    report = audit_log.verify()
    assert report["first_bad"] == 3
    assert "prev_hash" in report["reason"]


def test_verify_detects_a_deleted_record(audit_log: AuditLog) -> None:
    for _ in range(5):
        audit_log.append(make_event())
    execute(audit_log, sa.delete(audit_records).where(audit_records.c.seq == 3))
    report = audit_log.verify()
    assert report["ok"] is False
    assert report["first_bad"] == 4
    assert report["records"] == 2
    assert "seq 3 missing" in report["reason"]


def test_verify_detects_deleted_records_at_the_end(audit_log: AuditLog) -> None:
    for _ in range(5):
        audit_log.append(make_event())
    execute(audit_log, sa.delete(audit_records).where(audit_records.c.seq >= 4))
    report = audit_log.verify()
    assert report["ok"] is False
    assert report["first_bad"] == 4
    assert "records 4..5 are missing" in report["reason"]


def test_verify_detects_reordered_records(audit_log: AuditLog) -> None:
    for _ in range(4):
        audit_log.append(make_event())
    # Swap seq 2 and 3 (through a free number: seq is the primary key).
    seq = audit_records.c.seq
    execute(audit_log, sa.update(audit_records).where(seq == 2).values(seq=-2))
    execute(audit_log, sa.update(audit_records).where(seq == 3).values(seq=2))
    execute(audit_log, sa.update(audit_records).where(seq == -2).values(seq=3))
    report = audit_log.verify()
    assert report["ok"] is False
    assert report["first_bad"] == 2
    assert "prev_hash" in report["reason"]


def test_verify_detects_an_indexed_column_that_disagrees_with_the_body(
    audit_log: AuditLog,
) -> None:
    """Moving a record to another tenant would hide it from that tenant's queries."""
    for _ in range(3):
        audit_log.append(make_event(tenant="acme"))
    execute(audit_log, sa.update(audit_records).where(audit_records.c.seq == 2).values(tenant="x"))
    report = audit_log.verify()
    assert report["first_bad"] == 2
    assert "column tenant" in report["reason"]


# -- schema set-up --------------------------------------------------------------------


def test_opening_an_existing_log_keeps_it(database_url: str) -> None:
    first = AuditLog.open(database_url)
    first.append(make_event())
    first.dispose()
    again = AuditLog.open(database_url)
    try:
        assert again.append(make_event()).seq == 2
        assert again.verify()["ok"]
    finally:
        again.dispose()


def test_a_missing_chain_head_over_records_refuses_to_start(audit_log: AuditLog) -> None:
    audit_log.append(make_event())
    execute(audit_log, sa.delete(audit_chain_head))
    with pytest.raises(AuditLogCorrupt):
        AuditLog.open(audit_log.engine.url.render_as_string(hide_password=False))


def test_ping(audit_log: AuditLog) -> None:
    audit_log.ping()


def test_ping_an_unreachable_database() -> None:
    from services.audit.log import create_audit_engine

    log = AuditLog(create_audit_engine("postgresql+pg8000://postgres@127.0.0.1:1/none"))
    try:
        with pytest.raises(ServiceUnavailable):
            log.ping()
    finally:
        log.dispose()


# -- query ----------------------------------------------------------------------------


@pytest.fixture
def populated(audit_log: AuditLog) -> AuditLog:
    events = [
        make_event(action="backup.create", at="2024-05-01T10:00:00Z"),
        make_event(action="backup.delete", outcome="denied", at="2024-05-02T10:00:00+02:00"),
        make_event(
            action="restore.create",
            tenant="globex",
            actor={"type": "service", "id": "restore"},
            resource={"type": "restore", "id": "r-9"},
            request_id="req-2",
            at="2024-05-03T10:00:00Z",
        ),
        make_event(action="backups.list", tenant=None, request_id=None, at="2024-05-04T00:00:00Z"),
        make_event(action="source.update", outcome="failure", at="2024-05-05T00:00:00Z"),
    ]
    append_all(audit_log, events)
    return audit_log


def seqs(log: AuditLog, filters: dict[str, Any], **paging: Any) -> list[int]:
    return [item["seq"] for item in log.query(filters, **paging)["items"]]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [5, 4, 3, 2, 1]),
        ({"tenant": "acme"}, [5, 2, 1]),
        ({"tenant": None}, [4]),
        ({"action": "backup.create"}, [1]),
        ({"action": "backup.*"}, [2, 1]),
        ({"action": "backup*"}, [4, 2, 1]),
        ({"action": "backu_*"}, []),  # '_' is not a LIKE wildcard here
        ({"action": "*"}, [5, 4, 3, 2, 1]),
        ({"outcome": "denied"}, [2]),
        ({"actor_id": "restore"}, [3]),
        ({"resource_type": "restore"}, [3]),
        ({"resource_id": "r-9"}, [3]),
        ({"request_id": "req-2"}, [3]),
        ({"request_id": None}, [4]),
        ({"since": "2024-05-03T10:00:00Z"}, [5, 4, 3]),
        ({"until": "2024-05-03T10:00:00Z"}, [2, 1]),
        # 10:00+02:00 is 08:00Z; offset-less bounds mean UTC
        ({"since": "2024-05-02T08:00:00", "until": "2024-05-02T08:00:01"}, [2]),
        ({"since": "2024-05-02T09:00:00+02:00", "until": None}, [5, 4, 3, 2]),
        ({"tenant": "acme", "action": "backup.*", "outcome": "success"}, [1]),
    ],
)
def test_query_filters(populated: AuditLog, filters: dict[str, Any], expected: list[int]) -> None:
    result = populated.query(filters)
    assert [i["seq"] for i in result["items"]] == expected
    assert result["total"] == len(expected)


def test_query_pages_newest_first(populated: AuditLog) -> None:
    assert seqs(populated, {}, page=1, per_page=2) == [5, 4]
    assert seqs(populated, {}, page=2, per_page=2) == [3, 2]
    assert seqs(populated, {}, page=3, per_page=2) == [1]
    assert seqs(populated, {}, page=4, per_page=2) == []
    page = populated.query({"tenant": "acme"}, page=2, per_page=2)
    assert page == {
        "items": page["items"],
        "total": 3,
        "page": 2,
        "per_page": 2,
    }
    assert [i["seq"] for i in page["items"]] == [1]


def test_query_items_are_events_plus_chain_fields(populated: AuditLog) -> None:
    item = populated.query({"action": "restore.create"})["items"][0]
    assert set(item) == {
        "schema_version",
        "id",
        "at",
        "actor",
        "tenant",
        "action",
        "resource",
        "outcome",
        "request_id",
        "details",
        "seq",
        "prev_hash",
        "hash",
    }
    assert item["at"] == "2024-05-03T10:00:00Z"  # as sent, not as normalized for the index


@pytest.mark.parametrize(
    ("filters", "paging", "bad"),
    [
        ({}, {"page": 0}, "page"),
        ({}, {"page": "1"}, "page"),
        ({}, {"per_page": 0}, "per_page"),
        ({}, {"per_page": 501}, "per_page"),
        ({}, {"per_page": True}, "per_page"),
        ({"since": "yesterday"}, {}, "since"),
        ({"until": "2024-13-01T00:00:00Z"}, {}, "until"),
        ({"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"}, {}, "since"),
        ({"outcome": "maybe"}, {}, "outcome"),
        ({"action": "backup.*.x"}, {}, "action"),
        ({"action": None}, {}, "action"),
        ({"tennant": "acme"}, {}, "tennant"),
    ],
)
def test_query_validation(
    populated: AuditLog, filters: dict[str, Any], paging: dict[str, Any], bad: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        populated.query(filters, **paging)
    assert bad in info.value.details, info.value.details


def test_query_reports_every_problem_at_once(populated: AuditLog) -> None:
    with pytest.raises(ValidationFailed) as info:
        populated.query({"since": "nope", "colour": "red"}, page=0, per_page=1000)
    assert set(info.value.details) == {"since", "colour", "page", "per_page"}
    with pytest.raises(ValidationFailed) as info:
        populated.query(["not", "a", "dict"])  # type: ignore[arg-type]
    assert set(info.value.details) == {"filters"}


# -- what the log accepts -------------------------------------------------------------


def test_events_from_the_shared_helper_are_accepted() -> None:
    event = make_event(details={"size": 12, "ratio": 0.5})
    assert AuditEventRecord().load(event) == event


@pytest.mark.parametrize(
    ("change", "bad"),
    [
        ({"extra": 1}, "extra"),
        ({"schema_version": 2}, "schema_version"),
        ({"schema_version": 1.0}, "schema_version"),
        ({"at": "2024-05-01T10:00:00"}, "at"),
        ({"at": "not a date"}, "at"),
        ({"outcome": "meh"}, "outcome"),
        ({"action": "backup"}, "action"),
        ({"action": "backup.*"}, "action"),
        ({"id": ""}, "id"),
        ({"details": {"x": float("nan")}}, "_schema"),
        ({"tenant": "t" * 256}, "tenant"),
        ({"details": {"x": "\ud800"}}, "_schema"),
    ],
)
def test_events_the_log_refuses(change: dict[str, Any], bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        AuditEventRecord().load({**make_event(), **change})
    assert bad in info.value.normalized_messages()


def test_an_event_missing_fields_is_refused() -> None:
    event = make_event()
    del event["outcome"], event["actor"]
    with pytest.raises(ValidationError) as info:
        AuditEventRecord().load(event)
    assert set(info.value.normalized_messages()) == {"outcome", "actor"}
