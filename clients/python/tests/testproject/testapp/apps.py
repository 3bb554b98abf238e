from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "testproject.testapp"
    label = "testapp"

    def ready(self) -> None:
        from rcache.django import purge_on_save

        from .models import Article, Comment

        # An article's own page (and everything under it, by prefix), plus every
        # page tagged with the list tag or with the article's own tag.
        purge_on_save(
            Article,
            paths=lambda a: a.get_absolute_url(),
            tags=lambda a: ["articles", f"article:{a.pk}"],
        )
        # A comment changes its article's comment page: purge by path only.
        purge_on_save(Comment, paths=lambda c: [f"/articles/{c.article_id}/comments/"], exact=True)
