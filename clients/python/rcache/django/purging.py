"""Purges from Django: by path and tag, on model save, batched per transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, Type, Union
from urllib.parse import unquote

from django.db import models, transaction
from django.db.models.signals import post_delete, post_save
from django.utils.encoding import escape_uri_path

from ._pages import RedisFailed, as_list, call, to_entry_path
from .conf import get_client, get_settings

Spec = Union[None, Iterable[str], Callable[[Any], Any]]

# model -> the (paths, tags, exact, soft) it purges, for the admin action and `manage.py rcache`.
REGISTRY: Dict[Type[models.Model], List["_Rule"]] = {}


def normalize_user_path(path: str) -> str:
    """A URL path as ``reverse()`` / ``get_absolute_url()`` return it -> rcache path."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    p = to_entry_path(escape_uri_path(unquote(path)))
    if p is None:
        raise ValueError(f"cannot purge {path!r}: not a valid rcache path")
    return p


@dataclass
class Batch:
    """Purges to send together: deduplicated, in one pipeline."""

    paths: Set[Tuple[str, bool, bool]] = field(default_factory=set)  # (rcache path, exact, soft)
    tags: Set[Tuple[str, bool]] = field(default_factory=set)  # (tag, soft)

    def add_path(self, path: str, exact: bool = False, soft: bool = False) -> None:
        self.paths.add((normalize_user_path(path), exact, soft))

    def add_tags(self, tags: Iterable[str], soft: bool = False) -> None:
        self.tags.update((t, soft) for t in tags if t)

    def send(self) -> int:
        """Send every purge (and ``WAIT`` when ``PURGE_WAIT_REPLICAS`` is set); the total count.

        Returns 0 when Redis failed and ``IGNORE_EXCEPTIONS`` is on (a warning is logged).
        """
        if not self.paths and not self.tags:
            return 0
        what = f"purge of {len(self.paths)} path(s) and {len(self.tags)} tag(s)"
        try:
            return int(call(what, self.execute, breaker=False))
        except RedisFailed:
            return 0

    def execute(self) -> int:
        """:meth:`send` without fail-open: a ``redis.RedisError`` propagates."""
        s = get_settings()
        replicas, wait = s.purge_wait_replicas, s.purge_wait_timeout
        client = get_client()
        pipe = client.conn.pipeline(transaction=False)
        batch = type(client)(pipe)
        for path, exact, soft in sorted(self.paths):
            (batch.soft_purge if soft else batch.purge)(path, exact=exact)
        hard = sorted(t for t, soft in self.tags if not soft)
        soft_tags = sorted(t for t, soft in self.tags if soft)
        # A cluster pipeline cannot route a keyless command: those go on their own.
        on_cluster = hasattr(client.conn, "get_primaries")
        keyless: List[Tuple[bool, List[str]]] = []
        for tags, soft in ((hard, False), (soft_tags, True)):
            if tags and on_cluster:
                keyless.append((soft, tags))
            elif tags:
                (batch.soft_purge_tag if soft else batch.purge_tag)(*tags)
        if replicas > 0:
            batch.wait(replicas, wait)
        replies = pipe.execute() if pipe.command_stack else []
        total = sum(int(r) for r in (replies[:-1] if replicas > 0 else replies))
        total += sum(int((client.soft_purge_tag if soft else client.purge_tag)(*tags)) for soft, tags in keyless)
        if replicas > 0 and int(replies[-1]) < replicas:
            get_settings().logger.warning(
                "rcache: purge acknowledged by %d of %d replica(s) within %gs", int(replies[-1]), replicas, wait
            )
        return total


def purge(path: str, exact: bool = False, soft: bool = False) -> int:
    """Remove every cached response under ``path`` (its sub-paths too, unless ``exact``).

    ``path`` is a URL path as ``reverse()`` or ``get_absolute_url()`` return it
    (percent-escapes are decoded and re-encoded canonically; a query string is
    ignored: every variant goes).  ``soft=True`` marks them stale instead (served
    stale within a view's ``stale_while_revalidate``).  Returns the number of
    entries removed (or made stale), or 0 when Redis failed and ``IGNORE_EXCEPTIONS``
    is on (a warning is logged).
    """
    b = Batch()
    b.add_path(path, exact, soft)
    return b.send()


def purge_tag(*tags: str, soft: bool = False) -> int:
    """Remove (``soft``: make stale) every cached response carrying any of ``tags``."""
    b = Batch()
    b.add_tags(tags, soft)
    return b.send()


@dataclass
class _Rule:
    paths: Spec
    tags: Spec
    exact: bool
    soft: bool

    def add_to(self, batch: Batch, instance: Any) -> None:
        for p in _resolve(self.paths, instance):
            try:
                batch.add_path(p, self.exact, self.soft)
            except ValueError as exc:  # a bad path must not turn a saved row into an error page
                get_settings().logger.error("rcache: purge_on_save(%s): %s", type(instance).__name__, exc)
        batch.add_tags(_resolve(self.tags, instance), self.soft)


def _resolve(spec: Spec, instance: Any) -> List[str]:
    return as_list(spec(instance) if callable(spec) else spec)


def purge_instances(instances: Iterable[models.Model]) -> int:
    """Purge now what ``purge_on_save`` would purge for each instance (one pipeline)."""
    b = Batch()
    for obj in instances:
        for rule in REGISTRY.get(type(obj), []):
            rule.add_to(b, obj)
    return b.send()


def _pending_batch(using: str) -> Batch:
    """The batch that this transaction's commit will send, registering it once.

    A batch whose commit callback was dropped by a rollback is not reused (its
    purges were rolled back with the rows)."""
    conn = transaction.get_connection(using)
    batch: Optional[Batch] = getattr(conn, "_rcache_batch", None)
    if batch is not None and any(getattr(f, "_rcache_batch", None) is batch for _sids, f, *_ in conn.run_on_commit):
        return batch
    batch = Batch()

    def send() -> None:
        if getattr(conn, "_rcache_batch", None) is batch:
            conn._rcache_batch = None
        batch.send()

    send._rcache_batch = batch  # type: ignore[attr-defined]
    conn._rcache_batch = batch
    transaction.on_commit(send, using=using)
    return batch


def purge_on_save(
    model: Type[models.Model],
    paths: Spec = None,
    tags: Spec = None,
    *,
    exact: bool = False,
    soft: bool = False,
    dispatch_uid: Optional[str] = None,
) -> Callable[[], None]:
    """Purge an instance's paths and tags after each save and delete of ``model``.

    ``paths`` and ``tags`` are each a callable ``f(instance)`` returning a string, an
    iterable of strings or ``None`` -- or a fixed iterable of strings.  When both are
    omitted, the path is ``instance.get_absolute_url()``.  The purges of one
    transaction are collected, deduplicated and sent in one pipeline when it commits
    (immediately in autocommit mode), so a rolled-back save purges nothing and a
    page rendered right after the commit can never be re-cached from the old row.
    ``soft=True`` soft-purges (the pages go stale rather than away).

    Returns a function that disconnects the handlers.
    """
    if paths is None and tags is None:
        if not hasattr(model, "get_absolute_url"):
            raise TypeError(f"{model.__name__} has no get_absolute_url(); pass paths= or tags=")

        def paths(instance: Any) -> Any:
            return instance.get_absolute_url()

    rule = _Rule(paths, tags, exact, soft)

    def handler(sender: Any, instance: Any, using: str = "default", **kwargs: Any) -> None:
        if kwargs.get("raw"):  # loaddata: leave the cache alone
            return
        if transaction.get_connection(using).in_atomic_block:
            rule.add_to(_pending_batch(using), instance)
        else:
            b = Batch()
            rule.add_to(b, instance)
            b.send()

    uid = dispatch_uid or f"rcache.purge_on_save:{model._meta.label}:{id(handler)}"
    post_save.connect(handler, sender=model, weak=False, dispatch_uid=uid + ":save")
    post_delete.connect(handler, sender=model, weak=False, dispatch_uid=uid + ":delete")
    REGISTRY.setdefault(model, []).append(rule)
    from .admin import install_admin_action

    install_admin_action()

    def disconnect() -> None:
        post_save.disconnect(sender=model, dispatch_uid=uid + ":save")
        post_delete.disconnect(sender=model, dispatch_uid=uid + ":delete")
        REGISTRY[model] = [r for r in REGISTRY.get(model, []) if r is not rule]

    return disconnect
