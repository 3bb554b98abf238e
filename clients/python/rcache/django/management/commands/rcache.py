"""``manage.py rcache``: purge, purge-tag, list and stats of the configured rcache."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import get_client


class Command(BaseCommand):
    help = "Purge rcache entries by path or tag, list cached paths, show INFO rcache."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        p = sub.add_parser("purge", help="purge URL paths (and everything under them)")
        p.add_argument("paths", nargs="+")
        p.add_argument("--exact", action="store_true", help="only the path itself (all its variants)")
        p.add_argument("--soft", action="store_true", help="make stale instead of removing")
        t = sub.add_parser("purge-tag", help="purge every entry carrying any of the tags")
        t.add_argument("tags", nargs="+")
        t.add_argument("--soft", action="store_true", help="make stale instead of removing")
        ls = sub.add_parser("list", help="cached paths under a prefix, ascending")
        ls.add_argument("prefix", nargs="?", default=None, help="default: PATH_PREFIX + '/'")
        ls.add_argument("--count", type=int, default=None, help="at most this many (default: all)")
        sub.add_parser("stats", help="INFO rcache")

    def handle(self, *args: Any, **opts: Any) -> None:
        import redis

        from ...purging import Batch, normalize_user_path

        # Errors reach the operator: no fail-open here.
        try:
            action = opts["action"]
            if action in ("purge", "purge-tag"):
                b = Batch()
                if action == "purge":
                    for path in opts["paths"]:
                        b.add_path(path, opts["exact"], opts["soft"])
                else:
                    b.add_tags(opts["tags"], opts["soft"])
                self.stdout.write(f"{b.execute()} entries {'made stale' if opts['soft'] else 'purged'}")
            elif action == "list":
                prefix = normalize_user_path(opts["prefix"] or "/")
                count = opts["count"]
                for i, path in enumerate(get_client().iter_paths(prefix)):
                    if count is not None and i >= count:
                        break
                    self.stdout.write(path.decode("utf-8", "backslashreplace"))
            else:
                for k, v in sorted(get_client().info().items()):
                    self.stdout.write(f"{k}: {v}")
        except (redis.RedisError, OSError, ValueError) as exc:
            raise CommandError(f"rcache: {type(exc).__name__}: {exc}") from exc
