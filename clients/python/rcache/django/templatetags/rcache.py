"""``{% load rcache %}``: Django's ``{% cache %}`` tag with tags.

    {% cache 600 sidebar request.LANGUAGE_CODE tags "articles" article_tag %}
        ...
    {% endcache %}

Same arguments as Django's tag (``using="name"`` included), plus ``tags`` followed by
tag expressions (each a string or a list of strings), stored with the fragment when
its cache is an :class:`~rcache.django.cache.RCacheBackend`; ``purge_tag`` then
removes it.
"""

from __future__ import annotations

from typing import Any, List, Optional

from django import template
from django.core.cache import InvalidCacheBackendError, caches
from django.core.cache.utils import make_template_fragment_key
from django.template.base import FilterExpression, NodeList, Parser, Token

from ..cache import RCacheBackend

register = template.Library()


class TaggedCacheNode(template.Node):
    def __init__(
        self,
        nodelist: NodeList,
        expire: FilterExpression,
        name: str,
        vary_on: List[FilterExpression],
        using: Optional[FilterExpression],
        tags: List[FilterExpression],
    ) -> None:
        self.nodelist, self.expire, self.name = nodelist, expire, name
        self.vary_on, self.using, self.tags = vary_on, using, tags

    def render(self, context: Any) -> Any:
        expire = self.expire.resolve(context)
        try:
            expire = None if expire is None else int(expire)
        except (ValueError, TypeError) as exc:
            raise template.TemplateSyntaxError(f'"cache" tag got a non-integer timeout value: {expire!r}') from exc
        try:
            if self.using is not None:
                fragment_cache = caches[self.using.resolve(context)]
            else:
                try:
                    fragment_cache = caches["template_fragments"]
                except InvalidCacheBackendError:
                    fragment_cache = caches["default"]
        except InvalidCacheBackendError as exc:
            raise template.TemplateSyntaxError(f"Invalid cache name specified for cache tag: {exc}") from exc
        key = make_template_fragment_key(self.name, [v.resolve(context) for v in self.vary_on])
        value = fragment_cache.get(key)
        if value is None:
            value = self.nodelist.render(context)
            if isinstance(fragment_cache, RCacheBackend):
                fragment_cache.set(key, value, expire, tags=_tag_values(self.tags, context))
            else:
                fragment_cache.set(key, value, expire)
        return value


def _tag_values(exprs: List[FilterExpression], context: Any) -> List[str]:
    out: List[str] = []
    for e in exprs:
        v = e.resolve(context)
        if isinstance(v, (list, tuple, set)):
            out.extend(str(t) for t in v if t)
        elif v:
            out.append(str(v))
    return out


@register.tag("cache")
def do_cache(parser: Parser, token: Token) -> TaggedCacheNode:
    nodelist = parser.parse(("endcache",))
    parser.delete_first_token()
    bits = token.split_contents()
    tags: List[FilterExpression] = []
    if "tags" in bits[3:]:
        i = bits.index("tags", 3)
        tags = [parser.compile_filter(b) for b in bits[i + 1 :]]
        if not tags:
            raise template.TemplateSyntaxError("'cache' tag: 'tags' needs at least one tag")
        bits = bits[:i]
    if len(bits) < 3:
        raise template.TemplateSyntaxError(f"'{bits[0]}' tag requires at least 2 arguments.")
    using = None
    if len(bits) > 3 and bits[-1].startswith("using="):
        using = parser.compile_filter(bits[-1].removeprefix("using="))
        bits = bits[:-1]
    return TaggedCacheNode(nodelist, parser.compile_filter(bits[1]), bits[2], [parser.compile_filter(b) for b in bits[3:]], using, tags)
