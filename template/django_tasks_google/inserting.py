"""The enqueue's INSERT: what `instance.save(force_insert=True, using=db)` does, with its SQL built once.

Why: Django compiles an INSERT column by column on every save (quoting each column, asking each
field how to write its placeholder, assembling VALUES and RETURNING). For TaskExecution's 26
columns that compilation was the largest part of an enqueue's CPU, more than the statement
itself. The statement depends only on the schema, the database and which columns hold
expressions (the ProcessBackend's `max_attempts` wakes the workers on PostgreSQL, notify.py), so
it is built once per process, in the cache the claims' SQL uses (`claiming._statements`).
Everything else stays per call, as save() does it: the `pre_save`/`post_save` signals, each
field's `pre_save(add=True)` (`enqueued_at`) and `get_db_prep_save`, each expression resolved and
compiled by Django's INSERT compiler, the returned columns converted by it, the primary key and
`_state` set.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.db.models.options import Options
from django.db.models.signals import post_save, pre_save
from django.db.models.sql import InsertQuery
from django.db.models.sql.compiler import SQLInsertCompiler

from .claiming import _statements


class _Preparing(NamedTuple):
    """What prepares a model's values for one connection (a thread's)."""

    # Prepares expression values, compiles them, converts the returned columns.
    compiler: SQLInsertCompiler
    # Each inserted field's `get_db_prep_save(None, connection)`, which depends on nothing else: a
    # third of an enqueue's columns are NULL.
    nulls: list[object]


_preparing: WeakKeyDictionary[BaseDatabaseWrapper, dict[str, _Preparing]] = WeakKeyDictionary()


def insert(instance: Model, using: str) -> None:
    """Insert `instance`, a new row, on database `using`, as `save(force_insert=True, using=using)`.

    Models (or databases) this statement does not cover (a primary key already set, inheritance,
    database defaults, no `INSERT ... RETURNING`) are saved by `save()` itself.
    """
    model = type(instance)
    meta = model._meta
    key: tuple[object, ...] = (meta.label, "insert", using)
    if key not in _statements:
        _statements[key] = _build_head(meta, using)
    head = _statements[key]
    if head is None or instance.pk is not None:
        instance.save(force_insert=True, using=using)
        return
    connection = connections[using]
    fields = _inserted(meta)
    compiler, nulls = _preparing_for(model, fields, connection)
    pre_save.send(sender=model, instance=instance, raw=False, using=using, update_fields=None)
    with transaction.mark_for_rollback_on_error(using):
        params: list[Any] = []
        # (position, SQL) of each column whose value is an expression: the statement's shape.
        expressions: list[tuple[int, str]] = []
        for position, field in enumerate(fields):
            value = field.pre_save(instance, add=True)
            if value is None:
                params.append(nulls[position])
            elif hasattr(value, "resolve_expression"):
                # Resolved and checked (no F(), no aggregate) by Django, then compiled into the SQL.
                sql, expression_params = compiler.compile(compiler.prepare_value(field, value))
                expressions.append((position, sql))
                params.extend(expression_params)
            else:
                params.append(field.get_db_prep_save(value, connection))  # as prepare_value() does
        # Returned as save() returns them: the database's own columns (the id), then each
        # expression's value (stored on the instance instead of the expression).
        returning = list(meta.db_returning_fields)
        returning += [fields[position] for position, _ in expressions if fields[position] not in returning]
        shape = tuple(expressions)
        statement = _statements.get((*key, shape))
        if statement is None:
            statement = _build_statement(head, fields, shape, returning, using)
            _statements[(*key, shape)] = statement
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            rows = connection.ops.fetch_returned_rows(cursor, ())
        converters = compiler.get_converters([field.get_col(meta.db_table) for field in returning])
        [row] = compiler.apply_converters(rows, converters) if converters else rows
        for field, returned in zip(returning, row, strict=True):
            setattr(instance, field.attname, returned)
    instance._state.db = using
    instance._state.adding = False
    post_save.send(sender=model, instance=instance, created=True, update_fields=None, raw=False, using=using)


@cache
def _inserted(meta: Options[Any]) -> list[Field[Any, Any]]:
    """The columns an INSERT of a new row writes, in save()'s order (the generated id is not one)."""
    return [
        field
        for field in meta.local_concrete_fields
        if isinstance(field, Field) and field.column and not field.generated and field is not meta.auto_field
    ]


def _preparing_for(
    model: type[Model], fields: list[Field[Any, Any]], connection: BaseDatabaseWrapper
) -> _Preparing:
    by_model = _preparing.setdefault(connection, {})
    preparing = by_model.get(model._meta.label)
    if preparing is None:
        preparing = by_model[model._meta.label] = _Preparing(
            InsertQuery(model).get_compiler(connection=connection),
            [field.get_db_prep_save(None, connection) for field in fields],
        )
    return preparing


def _build_head(meta: Options[Any], using: str) -> str | None:
    """`INSERT INTO table (columns)`, or None where this module does not cover save()."""
    connection = connections[using]
    fields = _inserted(meta)
    returns = connection.ops.returning_columns(meta.db_returning_fields)
    if (
        not connection.features.can_return_columns_from_insert
        or returns[1]  # a RETURNING that needs parameters of its own (Oracle's bind variables)
        or meta.parents
        or meta.order_with_respect_to
        or not fields
        or any(field.has_db_default() or hasattr(field, "get_placeholder_sql") for field in fields)
    ):
        return None
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields if field.column)
    return f"{connection.ops.insert_statement()} {quote(meta.db_table)} ({columns})"


def _build_statement(
    head: str,
    fields: list[Field[Any, Any]],
    shape: tuple[tuple[int, str], ...],
    returning: list[Field[Any, Any]],
    using: str,
) -> str:
    placeholders = ["%s"] * len(fields)
    for position, sql in shape:
        placeholders[position] = sql
    returned, _ = connections[using].ops.returning_columns(returning)
    return f"{head} VALUES ({', '.join(placeholders)}) {returned}"
