"""The caller's thread and context: threading.local, contextvars, sqlite connections, decimal contexts, locks.

Each has a plain @poet version and a @poet(timeout=5) one: a timeout must not move the logic to another thread.
"""
import collections
import contextvars
import decimal
import os
import sqlite3
import threading

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
LOCAL = threading.local()
USER = contextvars.ContextVar("user")
LOCK = threading.RLock()
CALLER = {}


@poet
def local_user() -> str:
    RUNS["local_user"] += 1
    return LOCAL.user


@poet(timeout=5)
def local_user_timeout() -> str:
    RUNS["local_user_timeout"] += 1
    return LOCAL.user


@poet
def context_user() -> str:
    RUNS["context_user"] += 1
    return USER.get()


@poet(timeout=5)
def context_user_timeout() -> str:
    RUNS["context_user_timeout"] += 1
    return USER.get()


@poet
def query(connection: sqlite3.Connection, table: str) -> list:
    RUNS["query"] += 1
    return connection.execute(f"select name, qty from {table} order by name").fetchall()


@poet(timeout=5)
def query_timeout(connection, table: str) -> list:
    RUNS["query_timeout"] += 1
    return connection.execute(f"select name, qty from {table} order by name").fetchall()


@poet(timeout=5)
def insert_timeout(connection, name: str, qty: int) -> int:
    RUNS["insert_timeout"] += 1
    connection.execute("insert into stock values (?, ?)", (name, qty))
    return connection.total_changes


@poet
def divide_precisely(a: int, b: int) -> decimal.Decimal:
    RUNS["divide_precisely"] += 1
    return decimal.Decimal(a) / decimal.Decimal(b)


@poet(timeout=5)
def divide_precisely_timeout(a: int, b: int) -> decimal.Decimal:
    RUNS["divide_precisely_timeout"] += 1
    return decimal.Decimal(a) / decimal.Decimal(b)


@poet
def where_am_i() -> list:
    RUNS["where_am_i"] += 1
    return [threading.get_ident() == CALLER["thread"], os.getpid() == CALLER["pid"],
            threading.current_thread().name == CALLER["name"]]


@poet(timeout=5)
def where_am_i_timeout() -> list:
    RUNS["where_am_i_timeout"] += 1
    return [threading.get_ident() == CALLER["thread"], os.getpid() == CALLER["pid"],
            threading.current_thread().name == CALLER["name"]]


@poet(timeout=5)
def reenter_lock() -> bool:
    RUNS["reenter_lock"] += 1
    got = LOCK.acquire(blocking=False)
    if got:
        LOCK.release()
    return got


@poet(timeout=5, retries=1)
def local_counter_timeout(step: int) -> int:
    RUNS["local_counter_timeout"] += 1
    LOCAL.count = getattr(LOCAL, "count", 0) + step
    return LOCAL.count


def _stock():
    connection = sqlite3.connect(":memory:")
    connection.execute("create table stock (name text, qty int)")
    connection.executemany("insert into stock values (?, ?)", [("pear", 3), ("apple", 5)])
    return connection


@case()
def threading_local(o):
    LOCAL.user = "ann"
    return {"result": o.call(local_user)}


@case(note="threading.local under @poet(timeout=5)")
def threading_local_with_timeout(o):
    LOCAL.user = "bob"
    return {"result": o.call(local_user_timeout)}


@case()
def contextvar(o):
    token = USER.set("cy")
    try:
        return {"result": o.call(context_user)}
    finally:
        USER.reset(token)


@case(note="contextvars under @poet(timeout=5)")
def contextvar_with_timeout(o):
    token = USER.set("dee")
    try:
        return {"result": o.call(context_user_timeout)}
    finally:
        USER.reset(token)


@case(note="a sqlite3 connection made by the caller's thread")
def sqlite_connection(o):
    connection = _stock()
    try:
        return {"rows": o.call(query, connection, "stock")}
    finally:
        connection.close()


@case(note="a sqlite3 connection under @poet(timeout=5)")
def sqlite_connection_with_timeout(o):
    connection = _stock()
    try:
        return {"rows": o.call(query_timeout, connection, "stock")}
    finally:
        connection.close()


@case()
def sqlite_write_with_timeout(o):
    connection = _stock()
    try:
        changes = o.call(insert_timeout, connection, "plum", 1)
        return {"changes": changes, "rows": connection.execute("select count(*) from stock").fetchone()}
    finally:
        connection.close()


@case(note="the caller's decimal context (precision 5)")
def decimal_context(o):
    with decimal.localcontext() as context:
        context.prec = 5
        return {"result": o.call(divide_precisely, 1, 7)}


@case()
def decimal_context_with_timeout(o):
    with decimal.localcontext() as context:
        context.prec = 4
        return {"result": o.call(divide_precisely_timeout, 2, 3)}


@case(note="the logic runs in the caller's thread and process")
def same_thread_and_process(o):
    CALLER.update(thread=threading.get_ident(), pid=os.getpid(), name=threading.current_thread().name)
    return {"plain": o.call(where_am_i), "timeout": o.call(where_am_i_timeout)}


@case(note="an RLock held by the caller can be re-entered by the logic (same thread)")
def reentrant_lock_with_timeout(o):
    with LOCK:
        return {"result": o.call(reenter_lock)}


@case()
def thread_local_state_written_with_timeout(o):
    LOCAL.count = 10
    o.call(local_counter_timeout, 1)
    return {"result": o.call(local_counter_timeout, 2), "here": LOCAL.count}


@case(note="a call from another thread the caller started")
def called_from_a_worker_thread(o):
    results = {}

    def work():
        LOCAL.user = "thread-user"
        results["value"] = o.call(local_user_timeout)

    thread = threading.Thread(target=work, name="caller-thread")
    thread.start()
    thread.join(10)
    return {"result": results.get("value")}
